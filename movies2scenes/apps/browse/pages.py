"""The HTML of ``m2s browse``: Jinja2 templates (autoescaped), server-rendered, no JavaScript."""

from __future__ import annotations

import jinja2

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}{% endblock %} · movies2scenes</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#1d2733;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600} header .run{color:#9ab;font-weight:400;margin-left:auto}
main{padding:12px 16px} table{border-collapse:collapse} td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
.strip{display:flex;gap:3px;flex-wrap:wrap;margin:4px 0 10px} figure{margin:0;text-align:center;font-size:11px;color:#555}
figure img{display:block;height:64px;min-width:64px;background:#e4e4e4;border-radius:2px} .scene{border-left:3px solid #7a9;padding-left:8px;margin:10px 0}
.hit{border-left:3px solid #58c;padding-left:8px;margin:10px 0} .side{display:grid;grid-template-columns:1fr 1fr;gap:24px}
.side figure img{height:40px;min-width:40px}
.err{color:#b00;font-weight:600} .muted{color:#777} form{margin:6px 0} input[type=text]{width:10em}
.pager a{margin-right:8px}
</style></head>
<body><header><a href="/">Catalogue</a><a href="/search">Scene search</a><a href="/pairs">Mined pairs</a>
<span class="run">{{ run_name }}</span></header>
<main>{% block main %}{% endblock %}</main></body></html>"""

MACROS = """
{% macro strip(shots, movie) -%}
<div class="strip">{% for s in shots %}<figure><img src="/keyframe/{{ movie|urlencode }}/{{ s.shot }}/0.jpg" alt="{{ movie }} shot {{ s.shot }}" loading="lazy"><figcaption>{{ s.shot }} · {{ s.start_time|tc }}</figcaption></figure>{% endfor %}</div>
{%- endmacro %}
{% macro pager(page, pages, url) -%}
{% if pages > 1 %}<p class="pager">{% if page > 1 %}<a href="{{ url(page - 1) }}">« previous</a>{% endif %}
page {{ page }} of {{ pages }}{% if page < pages %} <a href="{{ url(page + 1) }}">next »</a>{% endif %}</p>{% endif %}
{%- endmacro %}
"""

TEMPLATES = {
    "base.html": BASE,
    "macros.html": MACROS,
    "catalogue.html": """{% extends "base.html" %}{% block title %}Catalogue{% endblock %}{% block main %}
<h1>Catalogue</h1>
<form action="/" method="get"><input type="text" name="q" value="{{ q }}" placeholder="title or id" aria-label="search">
<select name="split" aria-label="split"><option value="">any split</option>{% for s in splits %}<option{% if s == split %} selected{% endif %}>{{ s }}</option>{% endfor %}</select>
<button>Search</button></form>
<p class="muted">{{ total }} movie{{ '' if total == 1 else 's' }}{% if q or split %} match{% endif %} · {{ shots_total }} shots in the run · {{ failed }} failed</p>
<table id="movies"><tr><th>id</th><th>title</th><th>split</th><th>genres</th><th>shots</th><th>status</th></tr>
{% for m in movies %}<tr><td><a href="/movie/{{ m.id|urlencode }}">{{ m.id }}</a></td><td>{{ m.title }}</td><td>{{ m.split }}</td>
<td>{{ m.genres|join(', ') }}</td><td>{{ m.shots }}</td><td>{% if m.failure %}<span class="err">failed: {{ m.failure }}</span>{% elif m.shots %}ok{% else %}<span class="muted">not in the shots stage</span>{% endif %}</td></tr>{% endfor %}
</table>
{% import "macros.html" as x %}{{ x.pager(page, pages, url) }}
{% endblock %}""",
    "movie.html": """{% extends "base.html" %}{% import "macros.html" as x %}{% block title %}{{ movie.id }}{% endblock %}{% block main %}
<h1>{{ movie.title or movie.id }} <span class="muted">{{ movie.id }}</span></h1>
<p>{{ movie.split }}{% if movie.genres %} · {{ movie.genres|join(', ') }}{% endif %} · {{ movie.shots }} shots{% if movie.failure %} · <span class="err">failed: {{ movie.failure }}</span>{% endif %}</p>
{% if synopsis %}<p class="muted">{{ synopsis }}</p>{% endif %}
<h2>Similar movies</h2>
{% if similar %}<table id="similar"><tr><th>source</th><th>movies (score)</th></tr>
{% for source, rows in similar %}<tr><td>{{ source }}</td><td>{% for other, score in rows %}<a href="/movie/{{ other|urlencode }}">{{ other }}</a> ({{ '%.3g' % score }}){{ ', ' if not loop.last }}{% endfor %}</td></tr>{% endfor %}</table>
{% elif has_pairs %}<p class="muted">No movie pairs include this movie (pairs are built among the pretraining movies).</p>
{% else %}<p class="muted">No movie pairs in this run (build-movie-pairs has not run).</p>{% endif %}
<h2>Mined scene pairs</h2>
{% if pairs %}<table id="movie-pairs"><tr><th>with</th><th>scene pairs</th><th>best score</th></tr>
{% for other, count, best, a, b in pairs %}<tr><td><a href="/pairs/{{ a|urlencode }}/{{ b|urlencode }}">{{ other }}</a></td><td>{{ count }}</td><td>{{ '%.3f' % best }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">None mined with this movie.</p>{% endif %}
<h2>Shots and scenes of {{ n }} shots</h2>
{% if not searchable %}<p class="muted">Scene search needs an exported encoder (run export).</p>{% endif %}
{% for sc in scenes %}<div class="scene"><div>shots {{ sc.start }}–{{ sc.end - 1 }} · {{ sc.t0|tc }}–{{ sc.t1|tc }}
{% if searchable %} · <a class="similar" href="/search?movie={{ movie.id|urlencode }}&amp;start={{ sc.start }}">similar scenes</a>{% endif %}</div>
{{ x.strip(sc.shots, movie.id) }}</div>{% endfor %}
{{ x.pager(page, pages, url) }}
{% endblock %}""",
    "search.html": """{% extends "base.html" %}{% import "macros.html" as x %}{% block title %}Scene search{% endblock %}{% block main %}
<h1>Scene search</h1>
{% if not searchable %}<p class="err">This run has no exported scene encoder (export/DONE.json): run export to search scenes.</p>{% else %}
<form action="/search" method="get">movie <input type="text" name="movie" value="{{ form.movie }}" aria-label="movie id">
start shot <input type="text" name="start" value="{{ form.start }}" size="4" aria-label="start shot">
k <input type="text" name="k" value="{{ form.k }}" size="3" aria-label="k">
split <select name="split" aria-label="split filter"><option value="">any</option>{% for s in splits %}<option{% if s == form.split %} selected{% endif %}>{{ s }}</option>{% endfor %}</select>
hits from movies matching <input type="text" name="in" value="{{ form.within }}" aria-label="movie filter">
<button>Search</button></form>
<form action="/search/clip" method="post" enctype="multipart/form-data">or a short video clip <input type="file" name="clip" accept="video/*" aria-label="clip">
<button>Search with clip</button></form>
{% if building %}<p class="err" id="building">The scene index is being built: {{ building[0] }} of {{ building[1] }} movies embedded (kept in the run for the next start). Search answers when it is done; every other page works now.</p>
{% else %}<p class="muted">{{ indexed }} scenes of {{ n }} shots indexed (stride {{ stride }}{% if index_line %}; {{ index_line }}{% endif %}); {% if clip %}hits are the catalogue's nearest scenes to each window of the clip{% else %}hits leave out the query's movie{% endif %} and overlapping windows of a hit already shown. A score's standing: the share of random scene pairs of different movies in this index that score lower.</p>{% endif %}
{% endif %}
{% if error %}<p class="err">{{ error }}</p>{% endif %}
{% for q in queries %}<div class="scene"><h2>{{ q.label }}</h2>{% if q.shots %}{{ x.strip(q.shots, q.movie) }}{% endif %}
{% if q.get('frames') %}<div class="strip">{% for f in q.frames %}<img class="query-frame" src="{{ f }}" alt="the clip's shot {{ loop.index }}">{% endfor %}</div>{% endif %}
{% if q.get('outside') %}<p class="err outside">{{ q.outside }}</p>{% endif %}
{% for h in q.hits %}<div class="hit"><div class="rank">{{ loop.index }}. score {{ '%.3f' % h.score }}{% if h.standing is not none %} (above {{ '%.1f' % h.standing }} % of random pairs){% endif %} · <a class="hit-movie" href="/movie/{{ h.movie|urlencode }}">{{ h.title or h.movie }}</a> ({{ h.movie }}, {{ h.split }}) · shots {{ h.start }}–{{ h.end - 1 }} · {{ h.t0|tc }}–{{ h.t1|tc }}
· <a href="/search?movie={{ h.movie|urlencode }}&amp;start={{ h.start }}">search from here</a></div>{{ x.strip(h.shots, h.movie) }}</div>
{% else %}<p class="muted">No hits{% if form.within or form.split %} pass the filters{% endif %}.</p>{% endfor %}</div>{% endfor %}
{% endblock %}""",
    "pairs.html": """{% extends "base.html" %}{% import "macros.html" as x %}{% block title %}Mined pairs{% endblock %}{% block main %}
<h1>Mined scene pairs</h1>
{% if not mined %}<p class="err">This run has no mined scene pairs (scene_pairs/DONE.json): run mine-scene-pairs.</p>{% else %}
<form action="/pairs" method="get">movie <input type="text" name="movie" value="{{ movie }}" aria-label="movie"><button>Filter</button></form>
<p class="muted">{{ total }} movie pair{{ '' if total == 1 else 's' }} · {{ scene_pairs }} scene pairs of n = {{ n }} shots, best first</p>
<table id="pairs"><tr><th>movie a</th><th>movie b</th><th>scene pairs</th><th>best score</th><th>source</th></tr>
{% for p in rows %}<tr><td><a href="/movie/{{ p.a|urlencode }}">{{ p.a }}</a>{% if p.title_a %} · {{ p.title_a }}{% endif %}</td><td><a href="/movie/{{ p.b|urlencode }}">{{ p.b }}</a>{% if p.title_b %} · {{ p.title_b }}{% endif %}</td><td><a href="/pairs/{{ p.a|urlencode }}/{{ p.b|urlencode }}">{{ p.count }}</a></td><td>{{ '%.3f' % p.best }}</td><td>{{ p.source }}</td></tr>{% endfor %}</table>
{{ x.pager(page, pages, url) }}{% endif %}
{% endblock %}""",
    "pair.html": """{% extends "base.html" %}{% import "macros.html" as x %}{% block title %}{{ a }} × {{ b }}{% endblock %}{% block main %}
<h1><a href="/movie/{{ a|urlencode }}">{{ a }}</a> × <a href="/movie/{{ b|urlencode }}">{{ b }}</a></h1>
{% if heatmap %}<p><img id="adjacency" src="/pairs/{{ a|urlencode }}/{{ b|urlencode }}/adjacency.png" alt="shot adjacency of {{ a }} and {{ b }}"></p>
<p class="muted">Shot adjacency: rows are the {{ heatmap.rows }} shots of {{ a }}, columns the {{ heatmap.cols }} shots of {{ b }} ({{ heatmap.cell_px }} px per shot);
colour = similarity of E_movie's shot embeddings (viridis, {{ '%.3g' % heatmap.min }} dark to {{ '%.3g' % heatmap.max }} yellow); red squares = the {{ rows|length }} mined scene pairs of {{ n }} × {{ n }} shots.</p>
{% else %}<p class="muted">No adjacency heatmap: it needs the run's movie encoder and shot features.</p>{% endif %}
{% for p in rows %}<div class="scene"><div>score {{ '%.3f' % p.score }} ({{ p.source }})</div><div class="side">
<div>{{ a }} shots {{ p.start_a }}–{{ p.start_a + n - 1 }}{{ x.strip(p.shots_a, a) }}</div>
<div>{{ b }} shots {{ p.start_b }}–{{ p.start_b + n - 1 }}{{ x.strip(p.shots_b, b) }}</div></div></div>{% endfor %}
{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block title %}{{ heading }}{% endblock %}{% block main %}
<h1>{{ heading }}</h1><p class="err">{{ message }}</p>{% endblock %}""",
}


def timecode(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:04.1f}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["tc"] = timecode
    return env
