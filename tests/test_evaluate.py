"""m2s evaluate's task files: every bad row is named by file and line; the leakage guard."""

from __future__ import annotations

import pytest

from movies2scenes.config import ConfigError
from movies2scenes.tasks import read_tasks
from movies2scenes.stages.evaluate import leakage

HEADER = "task,kind,movie_id,start_shot,end_shot,label,split\n"


def test_good_rows_are_grouped_by_task(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text(HEADER + "place,classification,a,0,3,forest,train\nplace,classification,b,2,5,cave,test\n"
                 "age,regression,a,0,2,3.5,val\n")
    tasks = read_tasks([str(f)], {"a": 10, "b": 5})
    assert sorted(tasks) == ["age", "place"] and len(tasks["place"]) == 2
    assert tasks["place"][1]["start_shot"] == 2 and tasks["age"][0]["label"] == "3.5"


def test_every_bad_row_is_reported_with_file_and_line(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text(HEADER + "\n".join([
        "place,classification,a,0,3,forest,train",
        "place,clustering,a,0,3,forest,train",
        "place,classification,zzz,0,3,forest,train",
        "place,classification,a,5,20,forest,train",
        "place,classification,a,x,3,forest,train",
        "place,classification,a,0,3,forest,holdout",
        "age,regression,a,0,3,old,train",
        "place,regression,a,0,3,1.0,train",
        "cut,binary,a,0,4,2,train",
    ]) + "\n")
    with pytest.raises(ConfigError) as e:
        read_tasks([str(f)], {"a": 10})
    msg = str(e.value)
    for line, why in [(3, "kind 'clustering'"), (4, "movie 'zzz' has no shots"), (5, "shots [5, 20) outside"),
                      (6, "start_shot/end_shot must be integers"), (7, "split 'holdout'"), (8, "regression label 'old' is not a finite number"),
                      (9, "task 'place' mixes kinds"), (10, "binary label '2' is not 0 or 1")]:
        assert f"t.csv:{line}: {why}" in msg, (line, msg)
    with pytest.raises(ConfigError, match="missing column"):
        (tmp_path / "bad.csv").write_text("task,movie_id\nx,a\n")
        read_tasks([str(tmp_path / "bad.csv")], {"a": 10})
    with pytest.raises(ConfigError, match="does not exist"):
        read_tasks([str(tmp_path / "nope.csv")], {})


def test_leakage_is_checked_against_the_exports_record_of_pretraining_movies(tmp_path):
    """The guard trusts what pretraining recorded, not a catalogue given now; no record is an error."""
    from movies2scenes.stages.protocol import write_pretraining_movies

    tasks = {"place": [{"movie_id": "a"}, {"movie_id": "b"}]}
    export = tmp_path / "export"
    with pytest.raises(ConfigError, match="no record of the movies it was pretrained on"):
        leakage(tasks, export, tmp_path / "shots")
    write_pretraining_movies(export, ["a", "c"])
    assert leakage(tasks, export, tmp_path / "shots") == ["a"]
    record = export / "pretraining_movies.json"
    record.write_text(record.read_text().replace('"c"', '"b"'))  # edited by hand: hash no longer matches
    with pytest.raises(ConfigError, match="not a valid record"):
        leakage(tasks, export, tmp_path / "shots")
