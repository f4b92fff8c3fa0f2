"""The evaluation instrument (issue 39): what a representation is worth, and whether two differ.

* :mod:`.task`     — one task's clips (a movie and its shots, in order), labels and movie groups;
* :mod:`.folds`    — repeated cross-validation grouped by movie (stratified), the same folds for
  every representation compared;
* :mod:`.probes`   — out-of-fold predictions of the primary linear probe (L2 logistic / ridge, C by
  inner grouped CV), the cosine kNN and the paper's MLP probe;
* :mod:`.paired`   — a representation against a baseline: the mean difference, a movie-level paired
  bootstrap interval, a paired permutation p, and the verdict read from the interval;
* :mod:`.order`    — tasks that only shot order can solve (the same shots in every class).

Every statistic comes from scikit-learn or scipy; this package only arranges them.
"""
