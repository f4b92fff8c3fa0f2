import json

import pytest

from movies2scenes.catalogue import (
    CatalogueError,
    catalogue_from_folder,
    load_catalogue,
    load_watch_logs,
    parse_timestamp,
    safe_name,
)

from testkit.videos import write_catalogue


def test_csv_and_jsonl(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    cat = write_catalogue(tmp_path / "c.csv", [
        {"movie_id": "A", "video": "a.mp4", "genres": "drama|crime", "split": "val"},
        {"movie_id": "B", "video": "/abs/b.mp4"},
    ])
    c = load_catalogue(cat)
    assert c.ids() == ["A", "B"]
    assert c.movies[0].video == tmp_path / "a.mp4" and c.movies[0].genres == ("drama", "crime")
    assert c.movies[0].split == "val" and c.movies[1].split == "train"
    j = tmp_path / "c.jsonl"
    j.write_text(json.dumps({"movie_id": "A", "video": "a.mp4", "genres": ["x", "y"]}) + "\n\n")
    assert load_catalogue(j).movies[0].genres == ("x", "y")


def test_catalogue_problems_name_file_row_and_reason(tmp_path):
    cat = write_catalogue(tmp_path / "c.csv", [
        {"movie_id": "A", "video": "a.mp4"},
        {"movie_id": "A", "video": "b.mp4"},
        {"movie_id": "", "video": "c.mp4"},
        {"movie_id": "D", "video": "d.mp4", "split": "training"},
    ])
    with pytest.raises(CatalogueError) as e:
        load_catalogue(cat)
    text = str(e.value)
    assert "c.csv:3: duplicate movie_id 'A' (first on row 2)" in text
    assert "c.csv:4: missing movie_id" in text
    assert "c.csv:5: split 'training'" in text
    with pytest.raises(CatalogueError, match=r"c2\.csv:2: video file not found"):
        load_catalogue(write_catalogue(tmp_path / "c2.csv", [{"movie_id": "A", "video": "nope.mp4"}]),
                       require_videos=True)
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"movie_id": "A", "video": "a.mp4"}\n{broken\n')
    with pytest.raises(CatalogueError, match=r"c\.jsonl:2: not valid JSON"):
        load_catalogue(bad)
    with pytest.raises(CatalogueError, match="not found"):
        load_catalogue(tmp_path / "none.csv")


def test_watch_logs(tmp_path):
    logs = tmp_path / "logs.csv"
    logs.write_text("user_id,movie_id,timestamp\nu1,A,1700000000\nu1,B,2024-01-02T10:00:00Z\n")
    w = load_watch_logs(logs, {"A", "B"})
    assert len(w) == 2 and w.timestamp[1] == parse_timestamp("2024-01-02T10:00:00+00:00")
    logs.write_text("user_id,movie_id,timestamp\nu1,A,1700000000\nu1,Z,1700000001\nu2,A,yesterday\n,A,1\n")
    with pytest.raises(CatalogueError) as e:
        load_watch_logs(logs, {"A", "B"})
    text = str(e.value)
    assert "logs.csv:3: unknown movie_id 'Z'" in text
    assert "logs.csv:4: bad timestamp 'yesterday'" in text
    assert "logs.csv:5: empty user_id" in text
    logs.write_text("user,movie,time\n")
    with pytest.raises(CatalogueError, match="lacks column"):
        load_watch_logs(logs, {"A"})


def test_safe_name():
    assert safe_name("tt0111161") == "tt0111161"
    weird = ["../../etc/passwd", "a b", "a_b", "Amélie", "a.b", "", "x" * 300, "/"]
    names = [safe_name(w) for w in weird]
    assert len(set(names)) == len(names)  # distinct ids stay distinct
    for n in names:
        assert n and len(n) <= 64 and all(c.isalnum() and c.isascii() or c in "-_" for c in n)


def test_catalogue_from_folder(tmp_path):
    vids = tmp_path / "videos"
    (vids / "sub").mkdir(parents=True)
    for name in ["Amélie à Paris.mp4", "a b.mkv", "sub/a_b.mp4", "notes.txt", "UPPER.MP4"]:
        (vids / name).write_bytes(b"x")
    cat = catalogue_from_folder(vids, tmp_path / "cat.csv")
    assert len(cat) == 4
    assert len(set(cat.ids())) == 4
    assert all(m.video.is_file() for m in cat)
    assert {m.title for m in cat} == {"Amélie à Paris", "a b", "a_b", "UPPER"}
    with pytest.raises(CatalogueError, match="no video files"):
        (tmp_path / "empty").mkdir()
        catalogue_from_folder(tmp_path / "empty", tmp_path / "x.csv")
