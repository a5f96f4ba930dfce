"""Pre-training corpus: listing per kind, test-clip exclusion, weights, random crops, resume, sharding, bad files.

Clips are tiny float32 wav files whose samples say which file and which sample they are (file k holds
k + j / 2**16 at sample j, exact in float32), so every row of a batch can be traced back to its file and
crop offset without trusting the code under test.
"""

import collections
import dataclasses
import pathlib

import numpy as np
import pytest
import soundfile
from grain.sharding import ShardOptions

from asd_jax.data import corpus
from asd_jax.data import corpus_sources as cs

RATE = 16000
ONE = ShardOptions(0, 1)


def write_coded(path: pathlib.Path, file_id: int, samples: int) -> None:
  """A float32 wav whose sample j is file_id + j / 2**16 (exact: file_id < 128, j < 2**16)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(str(path), (file_id + np.arange(samples) / 2**16).astype(np.float32), RATE, subtype="FLOAT")


def decode_row(row: np.ndarray, valid: int) -> tuple[int, int]:
  """(file id, crop offset) of a batch row written by `write_coded`."""
  file_id = int(np.floor(row[0]))
  offset = int(round((row[0] - file_id) * 2**16))
  np.testing.assert_array_equal(row[:valid], (file_id + (offset + np.arange(valid)) / 2**16).astype(np.float32))
  return file_id, offset


def config_for(**sources):
  c = corpus.default_config()
  for name, entry in sources.items():
    c.sources[name] = entry
  c.clip_seconds = 0.01  # 160 samples
  c.min_seconds = 0.005  # 80 samples
  return c


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """Two folder sources: a/ with 3 clips (ids 0-2), b/ with 6 clips (ids 10-15), 0.05 s each."""
  root = tmp_path_factory.mktemp("corpus")
  for k in range(3):
    write_coded(root / "a" / f"clip{k}.wav", k, 800)
  for k in range(6):
    write_coded(root / "b" / "deep" / f"clip{k}.wav", 10 + k, 800)
  return root


# ---------------------------------------------------------------------------------------------- sources

def test_source_specs_mapping_list_defaults_and_errors():
  c = corpus.default_config()
  c.sources.zeta = corpus.source("/z", "folder", weight=2.0)
  c.sources.alpha = corpus.source("/a", "dcase")
  c.sources.unused = corpus.source("", "glob")
  specs = cs.source_specs(c)
  assert [s.name for s in specs] == ["alpha", "zeta"]  # sorted names; "" path skipped
  assert specs[0] == cs.SourceSpec("alpha", "/a", "dcase", 1.0, False, True, ())
  assert specs[1].weight == 2.0
  c.include_test = True
  assert all(s.include_test for s in cs.source_specs(c))
  as_list = corpus.default_config().to_dict()
  as_list["sources"] = [{"path": "/x"}, {"path": "/y", "kind": "glob", "include_test": True}]
  specs = cs.source_specs(type(c)(as_list))
  assert [(s.name, s.kind, s.include_test) for s in specs] == [("source0", "folder", False), ("source1", "glob", True)]
  for bad, match in [({"path": "/x", "wieght": 2}, "unknown key"), ({"path": "/x", "kind": "zip"}, "kind"),
                     ({"path": "/x", "weight": 0}, "weight must be > 0")]:
    with pytest.raises(cs.CorpusError, match=match):
      cs.source_specs(type(c)({"sources": [bad]}))
  with pytest.raises(cs.CorpusError, match="no source"):
    cs.source_specs(corpus.default_config())
  with pytest.raises(cs.CorpusError, match="unknown source option"):
    corpus.source("/x", include_tests=True)


def test_folder_glob_and_exclude_listing(tmp_path):
  for name in ["x/1.wav", "x/y/2.FLAC", "x/y/z/3.wav", "x/notes.txt", "x/eval/4.wav", "x/5.mp3"]:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  folder = cs.list_source(cs.SourceSpec("f", str(tmp_path / "x"), "folder"))
  rel = [str(pathlib.Path(p).relative_to(tmp_path)) for p in folder.paths]
  assert rel == ["x/1.wav", "x/eval/4.wav", "x/y/2.FLAC", "x/y/z/3.wav"]
  excluded = cs.list_source(cs.SourceSpec("f", str(tmp_path / "x"), "folder", exclude=("*/eval/*",)))
  assert len(excluded.paths) == 3 and excluded.excluded == {"pattern": 1}
  globbed = cs.list_source(cs.SourceSpec("g", str(tmp_path / "x" / "**" / "*.wav"), "glob"))
  assert [pathlib.Path(p).name for p in globbed.paths] == ["1.wav", "4.wav", "3.wav"]
  with pytest.raises(cs.CorpusError, match="not a directory"):
    cs.list_source(cs.SourceSpec("m", str(tmp_path / "missing"), "folder"))
  with pytest.raises(cs.CorpusError, match="no audio clip"):
    cs.list_source(cs.SourceSpec("g", str(tmp_path / "*.wav"), "glob"))


def test_duplicates_across_sources_are_kept_once(tmp_path):
  for name in ["x/1.wav", "x/2.wav", "y/3.wav"]:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  out = cs.list_sources([cs.SourceSpec("one", str(tmp_path / "x" / "1.wav"), "glob"),
                         cs.SourceSpec("all", str(tmp_path / "*" / "*.wav"), "glob")])
  assert [len(s.paths) for s in out] == [1, 2] and out[1].excluded == {"duplicate": 1}
  with pytest.raises(cs.CorpusError, match="already listed"):
    cs.list_sources([cs.SourceSpec("all", str(tmp_path / "*" / "*.wav"), "glob"),
                     cs.SourceSpec("y", str(tmp_path / "y"), "folder")])


def _dcase_tree(root: pathlib.Path) -> None:
  names = {"fan/train": ["section_00_source_train_normal_0000_m-n_W.wav",
                         "section_00_target_train_normal_0000_m-n_Z.wav"],
           "fan/test": ["section_00_source_test_anomaly_0000_m-n_W.wav",
                        "section_00_target_test_normal_0000_m-n_Z.wav"],
           "fan/supplemental": ["section_00_machine_0001_.wav", "section_00_noise_0001_.wav"]}
  for folder, files in names.items():
    (root / folder).mkdir(parents=True)
    for f in files:
      (root / folder / f).write_bytes(b"")


def test_dcase_source_excludes_test_clips_unless_asked(tmp_path):
  _dcase_tree(tmp_path / "year" / "dev_data" / "raw")
  spec = cs.SourceSpec("d", str(tmp_path / "year"), "dcase")
  files = cs.list_source(spec)
  assert [pathlib.Path(p).parent.name for p in files.paths] == ["supplemental"] * 2 + ["train"] * 2
  assert files.excluded == {"test": 2}
  with_test = cs.list_source(dataclasses.replace(spec, include_test=True))
  assert len(with_test.paths) == 6 and not with_test.excluded
  no_supp = cs.list_source(dataclasses.replace(spec, include_supplemental=False))
  assert len(no_supp.paths) == 2 and no_supp.excluded == {"test": 2, "supplemental": 2}


def test_dcase_source_with_a_bad_name_names_it(tmp_path):
  _dcase_tree(tmp_path)
  (tmp_path / "fan" / "train" / "recording_7.wav").write_bytes(b"")
  with pytest.raises(cs.CorpusError, match="recording_7.wav"):
    cs.list_source(cs.SourceSpec("d", str(tmp_path), "dcase"))
  with pytest.raises(cs.CorpusError, match="no DCASE machine folder"):
    cs.list_source(cs.SourceSpec("d", str(tmp_path / "fan" / "train"), "dcase"))


# ---------------------------------------------------------------------------------------------- batches

def test_batches_weights_and_uniform_passes(folders):
  # weight 2 on a/ (3 clips) and 1 on b/ (6 clips): proportions 6 : 6, so half the rows each.
  c = config_for(a=corpus.source(str(folders / "a"), weight=2.0), b=corpus.source(str(folders / "b")))
  it, num_clips = corpus.pretraining_batches(c, batch_size=4, seed=0, shard=ONE)
  assert num_clips == 9
  batches = take(it, 30)
  assert batches[0]["wav"].shape == (4, 160) and batches[0]["wav"].dtype == np.float32
  assert batches[0]["valid_samples"].dtype == np.int32 and batches[0]["source"].dtype == np.int32
  ids = [decode_row(b["wav"][r], 160)[0] for b in batches for r in range(4)]
  sources = np.concatenate([b["source"] for b in batches])
  np.testing.assert_array_equal(sources, [0 if i < 10 else 1 for i in ids])
  # Grain interleaves deterministically: every prefix holds each share to within one row.
  for k in range(1, 121):
    assert abs(np.sum(sources[:k] == 0) - k / 2) <= 1
  # Within a source, each pass holds every clip once (a shuffled permutation per pass), reshuffled.
  a_ids = [i for i in ids if i < 10]
  passes = [a_ids[j:j + 3] for j in range(0, 60, 3)]
  assert all(sorted(p) == [0, 1, 2] for p in passes) and len({tuple(p) for p in passes}) > 1


def test_default_weights_draw_every_clip_equally_often(folders):
  c = config_for(a=corpus.source(str(folders / "a")), b=corpus.source(str(folders / "b")))
  it, _ = corpus.pretraining_batches(c, batch_size=3, seed=1, shard=ONE)
  ids = [decode_row(b["wav"][r], 160)[0] for b in take(it, 30) for r in range(3)]
  counts = collections.Counter(ids)
  assert set(counts) == {0, 1, 2, 10, 11, 12, 13, 14, 15} and set(counts.values()) == {10}  # 90 rows, 9 clips


def test_random_crops_are_uniform_seeded_and_vary_per_pass(tmp_path):
  write_coded(tmp_path / "long" / "x.wav", 1, 2000)  # 2000 samples, rows of 160: starts 0..1840
  c = config_for(long=corpus.source(str(tmp_path / "long")))
  def offsets(seed, n=40):
    it, _ = corpus.pretraining_batches(c, batch_size=2, seed=seed, shard=ONE)
    return [decode_row(b["wav"][r], 160)[1] for b in take(it, n // 2) for r in range(2)]
  first = offsets(3)
  assert first == offsets(3) and first != offsets(4)
  assert len(set(first)) > 30 and 0 <= min(first) and max(first) <= 2000 - 160


def test_short_clips_are_padded_as_configured(tmp_path):
  write_coded(tmp_path / "short" / "x.wav", 2, 100)
  c = config_for(short=corpus.source(str(tmp_path / "short")))
  batch = next(corpus.pretraining_batches(c, batch_size=1, seed=0, shard=ONE)[0])
  decode_row(batch["wav"][0], 100)
  assert batch["valid_samples"][0] == 100 and not batch["wav"][0, 100:].any()
  c.pad = "repeat"
  batch = next(corpus.pretraining_batches(c, batch_size=1, seed=0, shard=ONE)[0])
  row = batch["wav"][0]
  assert batch["valid_samples"][0] == 160
  np.testing.assert_array_equal(row[100:], row[:60])
  c.pad = "mirror"
  with pytest.raises(cs.CorpusError, match="pad"):
    corpus.pretraining_batches(c, batch_size=1, seed=0, shard=ONE)


def test_resume_from_state_gives_the_same_batches_and_crops(tmp_path, folders):
  write_coded(tmp_path / "long" / "x.wav", 20, 3000)
  c = config_for(a=corpus.source(str(folders / "a")), long=corpus.source(str(tmp_path / "long"), weight=3.0))
  it, _ = corpus.pretraining_batches(c, batch_size=4, seed=7, shard=ONE)
  take(it, 5)
  state = it.get_state()
  expected = take(it, 6)
  resumed, _ = corpus.pretraining_batches(c, batch_size=4, seed=7, shard=ONE)
  resumed.set_state(state)
  for want, got in zip(expected, take(resumed, 6)):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_one_worker_process_gives_the_same_batches(folders):
  c = config_for(b=corpus.source(str(folders / "b")))
  inline = take(corpus.pretraining_batches(c, batch_size=2, seed=5, shard=ONE)[0], 4)
  c.num_workers = 1
  it, _ = corpus.pretraining_batches(c, batch_size=2, seed=5, shard=ONE)
  for want, got in zip(inline, take(it, 4)):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_processes_read_disjoint_shards_that_cover_the_corpus(folders):
  c = config_for(a=corpus.source(str(folders / "a")), b=corpus.source(str(folders / "b")))
  seen = []
  for index in range(2):
    it, num_clips = corpus.pretraining_batches(c, batch_size=4, seed=0, shard=ShardOptions(index, 2))
    batches = take(it, 12)
    assert num_clips == 9 and batches[0]["wav"].shape == (2, 160)  # batch_size // process_count rows
    seen.append({decode_row(b["wav"][r], 160)[0] for b in batches for r in range(2)})
  assert seen[0] == {0, 1, 10, 11, 12} and seen[1] == {2, 13, 14, 15}  # contiguous even splits per source
  with pytest.raises(cs.CorpusError, match="not divisible"):
    corpus.pretraining_batches(c, batch_size=3, seed=0, shard=ShardOptions(0, 2))


def test_a_process_whose_share_of_a_tiny_source_is_empty_reads_one_clip(folders):
  c = config_for(a=corpus.source(str(folders / "a")))
  ids = [{decode_row(b["wav"][0], 160)[0] for b in take(
      corpus.pretraining_batches(c, batch_size=4, seed=0, shard=ShardOptions(i, 4))[0], 3)} for i in range(4)]
  assert ids == [{0}, {1}, {2}, {0}]


def test_bad_files_are_skipped_and_named_when_validating(tmp_path, caplog):
  good = tmp_path / "mixed"
  write_coded(good / "ok.wav", 3, 800)
  (good / "text.wav").write_text("not audio")
  soundfile.write(str(good / "empty.wav"), np.zeros(0, np.float32), RATE)
  soundfile.write(str(good / "nan.wav"), np.full(800, np.nan, np.float32), RATE, subtype="FLOAT")
  soundfile.write(str(good / "silent.wav"), np.zeros(800, np.float32), RATE)
  soundfile.write(str(good / "short.wav"), np.ones(40, np.float32) * 0.1, RATE)
  c = config_for(mixed=corpus.source(str(good)))
  with caplog.at_level("WARNING"):
    it, num_clips = corpus.pretraining_batches(c, batch_size=2, seed=0, shard=ONE)
  assert num_clips == 1
  assert {decode_row(r, 160)[0] for b in take(it, 3) for r in b["wav"]} == {3}
  log = caplog.text
  for name, reason in [("text.wav", "unreadable"), ("empty.wav", "empty"), ("nan.wav", "non-finite"),
                       ("silent.wav", "silent"), ("short.wav", "too short")]:
    assert f"{name}: {reason}" in log or (name in log and reason in log), (name, reason)
  c.validate = False
  it, num_clips = corpus.pretraining_batches(c, batch_size=6, seed=0, shard=ONE)
  assert num_clips == 6
  with pytest.raises(cs.CorpusError, match=r"\.wav: .*data.validate=False"):
    next(it)


@pytest.mark.parametrize("reason, make", [
    ("unreadable", lambda p: p.write_text("x")),
    ("non-finite", lambda p: soundfile.write(str(p), np.array([0.1, np.inf] * 900, np.float32), RATE, subtype="FLOAT")),
])
def test_read_clip_reasons(tmp_path, reason, make):
  path = tmp_path / "x.wav"
  make(path)
  with pytest.raises(cs.BadClip, match=reason):
    cs.read_clip(path, sample_rate=RATE, min_seconds=0.1)


def test_stereo_and_other_rates_go_through_the_loader(tmp_path):
  rng = np.random.default_rng(0)
  stereo = (0.1 * rng.standard_normal((4410, 2))).astype(np.float32)
  soundfile.write(str(tmp_path / "s.flac"), stereo, 44100)
  from asd_jax.audio import wav as wavlib
  got = cs.read_clip(tmp_path / "s.flac", sample_rate=RATE, min_seconds=0.05)  # default: the channel mean
  np.testing.assert_array_equal(got, wavlib.load_wav(tmp_path / "s.flac", duration_s=None, channels="mean"))
  assert got.shape == (1600,)


def test_sources_read_with_their_channel_policy(tmp_path):
  """The corpus's `channels` is every source's default; a source's own key overrides it. Two-channel coded files:
  channel 0 holds the file's code, channel 1 its negative, so near / far / mean are told apart exactly."""
  for k in range(2):
    for folder, file_id in (("two", k), ("other", 20 + k)):
      code = (file_id + np.arange(800) / 2**16).astype(np.float32)
      (tmp_path / folder).mkdir(exist_ok=True)
      soundfile.write(str(tmp_path / folder / f"c{k}.wav"), np.stack([code, -code], 1), RATE, subtype="FLOAT")
  c = config_for(near=corpus.source(str(tmp_path / "two"), "folder", channels="near"),
                 other=corpus.source(str(tmp_path / "other"), "folder"))
  specs = {s.name: s for s in cs.source_specs(c)}
  assert specs["near"].channels == "near" and specs["other"].channels == "mean"
  c.channels = "far"
  assert {s.name: s.channels for s in cs.source_specs(c)} == {"near": "near", "other": "far"}
  it, _ = corpus.pretraining_batches(c, batch_size=4, seed=0, shard=ONE)
  rows = [(int(b["source"][i]), b["wav"][i]) for b in take(it, 3) for i in range(4)]
  names = sorted(specs)  # sources are indexed in sorted name order
  for source, row in rows:
    if names[source] == "near":
      assert decode_row(row, 160)[0] in (0, 1)
    else:
      decode_row(-row, 160)  # the far channel of "other": minus the code
  c.sources.other.channels = "sideways"
  with pytest.raises(cs.CorpusError, match="source 'other': channels 'sideways' is not one of"):
    cs.source_specs(c)


def test_a_mono_file_in_a_cancel_source_is_a_bad_clip(tmp_path):
  write_coded(tmp_path / "m.wav", 1, 800)
  with pytest.raises(cs.BadClip, match=r"wrong channel count: 1 channel\(s\), but channel policy 'cancel'"):
    cs.read_clip(tmp_path / "m.wav", sample_rate=RATE, min_seconds=0.01, channels="cancel")


def test_a_source_at_the_legacy_policy_serialises_as_before():
  """Packs written before `channels` existed: their manifests and fingerprints hold no channels entry, and a source
  read with the mix-down still serialises the same; any other policy is recorded."""
  spec = cs.SourceSpec(name="a", path="/x", kind="folder")
  assert "channels" not in spec.to_json()
  assert cs.SourceSpec(name="a", path="/x", kind="folder", channels="near").to_json()["channels"] == "near"


def test_read_ahead_is_bounded(folders, monkeypatch):
  """Grain's default would read 500 batches ahead; the corpus reads `read_ahead` (+ one per thread at most)."""
  import threading
  import time
  calls, lock = [0], threading.Lock()
  original = corpus._ReadClip.__call__
  def counting(self, element, rng):
    with lock:
      calls[0] += 1
    return original(self, element, rng)
  monkeypatch.setattr(corpus._ReadClip, "__call__", counting)
  c = config_for(b=corpus.source(str(folders / "b")))
  c.read_ahead, c.read_threads = 3, 2
  it, _ = corpus.pretraining_batches(c, batch_size=2, seed=0, shard=ONE)
  next(it)
  time.sleep(1.0)  # let the read-ahead threads run
  assert 2 <= calls[0] <= 2 * (1 + 3 + 2)  # rows x (consumed + read ahead + in flight)


def test_default_shard_is_this_jax_process(folders):
  import jax
  c = config_for(a=corpus.source(str(folders / "a")))
  shard = corpus.default_shard()
  assert (shard.shard_index, shard.shard_count) == (jax.process_index(), jax.process_count()) == (0, 1)
  assert next(corpus.pretraining_batches(c, batch_size=3, seed=0)[0])["wav"].shape == (3, 160)
