"""Packing a corpus into ArrayRecord shards: counts, manifest, checksums, rejected files, resume, reading back.

Checks go through independent readers where they can: `hashlib` for the checksums, array_record's own
`ArrayRecordReader` for the record counts, the project's wav loader for the decoded samples.
"""

import hashlib
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from array_record.python import array_record_module
from grain.sharding import ShardOptions

from asd_jax.audio import wav as wavlib
from asd_jax.data import corpus
from asd_jax.data import shards

RATE = 16000
ONE = ShardOptions(0, 1)
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _pcm(path, samples, seed):
  path.parent.mkdir(parents=True, exist_ok=True)
  x = np.random.default_rng(seed).uniform(-0.5, 0.5, samples).astype(np.float32)
  soundfile.write(str(path), x, RATE, subtype="PCM_16")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  """good/: 5 PCM16 clips of 400-1200 samples; mixed/: 2 good clips (one 44.1 kHz stereo) and 5 bad files."""
  root = tmp_path_factory.mktemp("pack")
  for k in range(5):
    _pcm(root / "good" / f"g{k}.wav", 400 + 200 * k, k)
  _pcm(root / "mixed" / "a_ok.wav", 900, 10)
  soundfile.write(str(root / "mixed" / "b_stereo.flac"),
                  np.random.default_rng(11).uniform(-0.3, 0.3, (2205, 2)).astype(np.float32), 44100)
  (root / "mixed" / "c_text.wav").write_text("not audio")
  soundfile.write(str(root / "mixed" / "d_empty.wav"), np.zeros(0, np.float32), RATE)
  soundfile.write(str(root / "mixed" / "e_nan.wav"), np.full(500, np.nan, np.float32), RATE, subtype="FLOAT")
  soundfile.write(str(root / "mixed" / "f_silent.wav"), np.zeros(500, np.float32), RATE)
  _pcm(root / "mixed" / "g_short.wav", 30, 12)
  return root


def _config(tree, **weights):
  c = corpus.default_config()
  c.sources.good = corpus.source(str(tree / "good"), weight=weights.get("good", 1.0))
  c.sources.mixed = corpus.source(str(tree / "mixed"), weight=weights.get("mixed", 1.0))
  c.clip_seconds = 0.05  # 800 samples
  c.min_seconds = 0.01  # 160 samples
  return c


@pytest.fixture(scope="module")
def packed(tree, tmp_path_factory):
  out = tmp_path_factory.mktemp("packed") / "corpus"
  manifest = shards.pack(_config(tree), out, clips_per_shard=2, progress=False)
  return out, manifest


def test_manifest_counts_hours_and_rejected_files(packed, tree):
  out, manifest = packed
  assert manifest == json.loads((out / shards.MANIFEST).read_text())
  assert manifest["complete"] and manifest["format"] == shards.FORMAT
  good, mixed = manifest["sources"]
  assert (good["name"], good["files"], good["clips"], good["rejected"]) == ("good", 5, 5, [])
  assert good["hours"] == pytest.approx(sum(400 + 200 * k for k in range(5)) / RATE / 3600, rel=1e-12)
  assert (mixed["files"], mixed["clips"]) == (7, 2)
  assert mixed["hours"] == pytest.approx((900 + 800) / RATE / 3600, rel=1e-12)  # 2205 at 44.1 kHz -> 800 at 16 kHz
  reasons = {pathlib.Path(r["path"]).name: r["reason"] for r in mixed["rejected"]}
  expected = {"c_text.wav": "unreadable", "d_empty.wav": "empty", "e_nan.wav": "non-finite",
              "f_silent.wav": "silent", "g_short.wav": "too short"}
  assert set(reasons) == set(expected)
  assert all(reasons[name].startswith(why) for name, why in expected.items()), reasons
  assert all(r["shard"] in (1, 2, 3) for r in mixed["rejected"])
  assert manifest["totals"] == {"clips": 7, "hours": good["hours"] + mixed["hours"], "rejected": 5, "shards": 7}
  summary = shards.format_summary(manifest)
  assert "5 rejected" in summary and "e_nan.wav" in summary
  assert not list(out.glob("*.tmp"))


def test_shards_counts_and_checksums_by_independent_readers(packed):
  out, manifest = packed
  good, mixed = manifest["sources"]
  assert [s["files"] for s in good["shards"]] == [2, 2, 1] and [s["files"] for s in mixed["shards"]] == [2, 2, 2, 1]
  assert [s["clips"] for s in mixed["shards"]] == [2, 0, 0, 0]  # a_ok, b_stereo; the rest rejected
  for source in manifest["sources"]:
    for shard in source["shards"]:
      path = out / shard["file"]
      assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
      assert path.stat().st_size == shard["bytes"]
      reader = array_record_module.ArrayRecordReader(str(path))
      assert reader.num_records() == shard["clips"]
      reader.close()
  assert shards.verify(out) == []


def test_records_hold_the_loaders_samples(packed, tree, tmp_path):
  out, manifest = packed
  shard = manifest["sources"][0]["shards"][0]
  reader = array_record_module.ArrayRecordReader(str(out / shard["file"]))
  records = reader.read(list(range(shard["clips"])))
  for record, name in zip(records, ["g0.wav", "g1.wav"]):
    header, offset = shards.decode_header(record)
    expected = wavlib.load_wav(tree / "good" / name, duration_s=None)
    assert header["path"] == str(tree / "good" / name) and header["samples"] == expected.size
    np.testing.assert_array_equal(shards.decode_samples(record, header, offset), expected)  # PCM16 is exact
    np.testing.assert_array_equal(shards.decode_samples(record, header, offset, 50, 100), expected[50:150])
    flac, _ = shards.encode_record(expected, encoding="flac", sample_rate=RATE, path=name, source=0)
    header, offset = shards.decode_header(flac)
    np.testing.assert_array_equal(shards.decode_samples(flac, header, offset, 50, 100), expected[50:150])


def test_packed_and_direct_reading_give_the_same_batches(packed, tree):
  out, _ = packed
  c = _config(tree)
  c.sources = {"good": c.sources.good}  # the 16 kHz PCM16 source: packing is exact there
  direct = corpus.pretraining_batches(c, batch_size=3, seed=4, shard=ONE)[0]
  c = _config(tree)
  c.packed = str(out)
  c.sources.mixed.weight = 1e-9  # reweighting a packed source needs no re-pack
  from_shards, num_clips = corpus.pretraining_batches(c, batch_size=3, seed=4, shard=ONE)
  assert num_clips == 7
  wanted = [next(direct) for _ in range(4)]
  got = [next(from_shards) for _ in range(4)]
  # mixed has weight ~0, so (Grain rounding the smaller proportion up to 100 of 2.5e11) only good is drawn.
  for want, have in zip(wanted, got):
    np.testing.assert_array_equal(have["source"], 0)
    np.testing.assert_array_equal(have["wav"], want["wav"])
    np.testing.assert_array_equal(have["valid_samples"], want["valid_samples"])


def test_packed_reading_resumes_exactly(packed):
  out, _ = packed
  c = corpus.default_config()
  c.packed = str(out)
  c.clip_seconds = 0.03
  it, _ = corpus.pretraining_batches(c, batch_size=2, seed=9, shard=ONE)
  [next(it) for _ in range(3)]
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  resumed, _ = corpus.pretraining_batches(c, batch_size=2, seed=9, shard=ONE)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_packed_sources_must_match_the_config(packed, tree):
  out, _ = packed
  c = _config(tree)
  c.packed = str(out)
  c.sources.good.path = str(tree / "elsewhere")
  with pytest.raises(corpus.CorpusError, match="re-pack"):
    corpus.pretraining_batches(c, batch_size=2, seed=0, shard=ONE)
  c = _config(tree)
  c.packed = str(out)
  c.sample_rate = 8000
  with pytest.raises(corpus.CorpusError, match="16000 Hz"):
    corpus.pretraining_batches(c, batch_size=2, seed=0, shard=ONE)


def test_a_source_packed_with_a_channel_policy_records_it_and_holds_its_samples(packed, tree, tmp_path):
  """The packed default corpus (mix-down) holds no channels entry and still matches a config that names none;
  a `near` source is packed as channel 0 (the loader's samples), recorded in the manifest, and a config asking
  another policy of the packed source is told to re-pack."""
  out, manifest = packed
  assert all("channels" not in source for source in manifest["sources"])
  c = _config(tree)
  c.packed = str(out)
  corpus.pretraining_batches(c, batch_size=2, seed=0, shard=ONE)  # matches
  c.sources.mixed.channels = "near"
  with pytest.raises(corpus.CorpusError, match="source 'mixed' was packed with .*'channels': '<absent>'.*re-pack"):
    corpus.pretraining_batches(c, batch_size=2, seed=0, shard=ONE)
  c = _config(tree)
  c.sources = {"mixed": c.sources.mixed}
  c.sources.mixed.channels = "near"
  near_pack = shards.pack(c, tmp_path / "near", progress=False)
  assert near_pack["sources"][0]["channels"] == "near"
  entry = near_pack["sources"][0]
  reader = array_record_module.ArrayRecordReader(str(tmp_path / "near" / entry["shards"][0]["file"]))
  by_path = {}
  for record in reader.read(list(range(entry["shards"][0]["clips"]))):
    header, offset = shards.decode_header(record)
    by_path[pathlib.Path(header["path"]).name] = shards.decode_samples(record, header, offset)
  reader.close()
  stereo = tree / "mixed" / "b_stereo.flac"
  # pcm16 stores round(x * 32768) / 32768: half a step (1.5e-5) off the resampled float channel, plus float32 noise
  np.testing.assert_allclose(by_path["b_stereo.flac"], wavlib.load_wav(stereo, duration_s=None, channels="near"),
                             rtol=0, atol=0.5 / 32768 + 1e-7)
  assert not np.array_equal(by_path["b_stereo.flac"], wavlib.load_wav(stereo, duration_s=None, channels="mean"))
  c.packed = str(tmp_path / "near")
  c.sources.mixed.channels = "cancel"
  with pytest.raises(corpus.CorpusError, match="re-pack"):
    corpus.pretraining_batches(c, batch_size=2, seed=0, shard=ONE)


def test_killed_pack_resumes_and_ends_as_an_uninterrupted_one(packed, tree, tmp_path):
  out, full = packed
  partial = tmp_path / "partial"
  first = shards.pack(_config(tree), partial, clips_per_shard=2, max_new_shards=3, progress=False)
  assert not first["complete"] and first["totals"]["shards"] == 3
  with pytest.raises(shards.PackError, match="not complete"):
    c = corpus.default_config()
    c.packed = str(partial)
    corpus.pretraining_batches(c, batch_size=1, seed=0, shard=ONE)
  # What a kill leaves: a half-written shard under its temporary name, and a renamed shard that the
  # manifest does not list yet (killed between the rename and the manifest write).
  (partial / (shards.shard_name(1, 0) + ".tmp")).write_bytes(b"half a shard")
  (partial / shards.shard_name(1, 1)).write_bytes(b"renamed, not in the manifest")
  second = shards.pack(_config(tree), partial, clips_per_shard=2, progress=False)
  assert second["complete"]
  strip = lambda m: json.loads(json.dumps(m))  # noqa: E731
  assert strip(second) == strip(full)  # same shards, checksums, rejected files as the one-go pack
  assert sorted(p.name for p in partial.iterdir()) == sorted(p.name for p in out.iterdir())
  again = shards.pack(_config(tree), partial, clips_per_shard=2, progress=False)  # nothing left to do
  assert again == second


def test_a_corrupted_shard_is_found_and_rewritten(packed, tree, tmp_path):
  out, full = packed
  copy = tmp_path / "copy"
  shards.pack(_config(tree), copy, clips_per_shard=2, progress=False)
  victim = copy / full["sources"][0]["shards"][1]["file"]
  data = bytearray(victim.read_bytes())
  data[-5] ^= 0xFF
  victim.write_bytes(bytes(data))
  assert shards.verify(copy) == [f"{victim}: SHA-256 differs from the manifest's"]
  shards.pack(_config(tree), copy, clips_per_shard=2, progress=False)
  assert shards.verify(copy) == []


def test_another_corpus_in_the_folder_is_refused_unless_overwrite(packed, tree, tmp_path):
  out = tmp_path / "p"
  shards.pack(_config(tree), out, clips_per_shard=4, progress=False)
  with pytest.raises(shards.PackError, match="another corpus"):
    shards.pack(_config(tree), out, clips_per_shard=3, progress=False)
  manifest = shards.pack(_config(tree), out, clips_per_shard=3, overwrite=True, progress=False)
  assert manifest["complete"] and manifest["settings"]["clips_per_shard"] == 3
  assert len(list(out.glob("*" + shards.SHARD_SUFFIX))) == manifest["totals"]["shards"] == 5
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "x.array_record").write_bytes(b"")
  with pytest.raises(shards.PackError, match="no manifest.json"):
    shards.pack(_config(tree), tmp_path / "other", progress=False)


def test_pack_cli_writes_verifies_and_says_what_it_rejected(tree, tmp_path):
  config = tmp_path / "corpus_config.py"
  config.write_text("from asd_jax.data import corpus\n\n\ndef get_config():\n  c = corpus.default_config()\n"
                    f"  c.sources.mixed = corpus.source({str(tree / 'mixed')!r})\n  c.min_seconds = 0.01\n"
                    "  c.lock()\n  return c\n")
  run = subprocess.run([sys.executable, "-m", "asd_jax.data.pack", f"--config={config}", f"--out={tmp_path / 'o'}",
                        "--encoding=flac", "--verify", "--num_workers=0"], capture_output=True, text=True,
                       cwd=REPO_ROOT, timeout=300)
  assert run.returncode == 0, run.stderr
  assert "2 clips" in run.stdout and "5 rejected" in run.stdout and "g_short.wav: too short" in run.stdout
  assert "verify: every shard matches" in run.stdout
  assert json.loads((tmp_path / "o" / shards.MANIFEST).read_text())["settings"]["encoding"] == "flac"


def test_pcm16_rounds_and_counts_clipped_samples():
  x = np.array([0.5, -1.0, 1.0, -1.00002, 2.0, 1.5 / 32768, 0.99998], np.float32)
  pcm, clipped = shards.to_pcm16(x)
  np.testing.assert_array_equal(pcm, [16384, -32768, 32767, -32768, 32767, 2, 32767])
  assert clipped == 3  # 1.0 (32768), -1.00002 (-32769), 2.0
