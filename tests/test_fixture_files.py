"""The committed data the suite reads: reference fixtures and real recordings, each file against its manifest.

`tests/fixtures/manifest.json` and `tests/real/manifest.json` list every file with its sha256, so that a
damaged, truncated or hand-edited fixture fails here by name rather than as a parity failure far away. With
clones of upstream (`ASD_JAX_UPSTREAM_BEATS`, `ASD_JAX_UPSTREAM_EAT`, `ASD_JAX_TORCHAUDIO`),
`benchmarks/make_reference_fixtures.py` regenerates every fixture and the result is compared with the committed
files: byte for byte where the file holds no floating-point computation, arrays to `REGENERATED_RTOL` otherwise
(the generator's docstring says which and why).
"""

import hashlib
import json
import math
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile

from asd_jax.data import filenames
from benchmarks import make_reference_fixtures as generator
from benchmarks import upstream_beats
from tests.conftest import REPO_ROOT

REAL = REPO_ROOT / "tests" / "real"
NOT_LISTED = ("manifest.json", "README.md")


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_fixture_file_is_the_one_the_manifest_lists(fixtures):
  listed = json.loads((fixtures / "manifest.json").read_text())["files"]
  present = sorted(p.name for p in fixtures.iterdir() if p.name not in NOT_LISTED)
  assert present == sorted(listed), "files in the folder vs manifest.json"
  for name, entry in listed.items():
    path = fixtures / name
    assert (path.stat().st_size, _sha256(path)) == (entry["bytes"], entry["sha256"]), f"{path} is not the listed file"
    if name.endswith(".npz"):
      with np.load(path) as npz:
        found = {k: {"shape": list(npz[k].shape), "dtype": str(npz[k].dtype)} for k in npz.files}
      assert found == entry["arrays"], path


def test_the_manifest_is_what_the_generator_writes_for_these_files(fixtures, tmp_path):
  """Seeds, configs and file entries: rewritten from the files (no upstream needed), the same bytes."""
  copy = tmp_path / "fixtures"
  shutil.copytree(fixtures, copy)
  (copy / "manifest.json").unlink()
  subprocess.run([sys.executable, "-m", "benchmarks.make_reference_fixtures", "--manifest_only", f"--out={copy}"],
                 cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
  assert (copy / "manifest.json").read_bytes() == (fixtures / "manifest.json").read_bytes()


def test_real_recordings_are_the_listed_dataset_files():
  listed = json.loads((REAL / "manifest.json").read_text())
  wavs = sorted(str(p.relative_to(REAL)) for p in REAL.rglob("*.wav"))
  assert wavs == sorted(entry["file"] for entry in listed)
  for entry in listed:
    path = REAL / entry["file"]
    info = soundfile.info(str(path))
    assert (info.channels, info.samplerate, info.subtype) == (entry["channels"], 16000, "PCM_16"), path
    assert info.frames == round(entry["seconds"] * 16000), path
    assert _sha256(path) == entry["sha256"], f"{path} is not the dataset's file"
  dcase = [REAL / e["file"] for e in listed if e["file"].startswith("dcase2023_dev/")]
  assert len(dcase) == 28 and {e["channels"] for e in listed if e["file"].startswith("mimii")} == {8}
  for path in dcase:  # the dataset's own names: split and label in the name agree with the folders
    parsed = filenames.parse_name(path.name)
    assert parsed.split == path.parent.name and parsed.section == "00", path
  assert sum(filenames.parse_name(p.name).label == "anomaly" for p in dcase) == 5


# ---------------------------------------------------------------------------------------------------------
# The generator's own pieces that need no upstream code.

KALDI_STAND_IN = "import torchaudio\n\ndef fbank(x):\n  return ('fbank', torchaudio.__name__)\n"


@pytest.mark.parametrize("form", ["file", "folder", "wheel"])
def test_kaldi_loads_from_a_wheel_a_folder_or_the_file_without_torchaudio(form, tmp_path):
  file = tmp_path / "site" / upstream_beats.KALDI_IN_WHEEL
  file.parent.mkdir(parents=True)
  file.write_text(KALDI_STAND_IN)
  source = {"file": file, "folder": tmp_path / "site", "wheel": tmp_path / "torchaudio-2.11.0-py3-none-any.whl"}[form]
  if form == "wheel":
    with zipfile.ZipFile(source, "w") as wheel:
      wheel.write(file, upstream_beats.KALDI_IN_WHEEL)
  before = set(sys.modules)
  kaldi = upstream_beats.load_kaldi(source)
  assert kaldi.fbank(None) == ("fbank", "torchaudio")  # its `import torchaudio` got the stand-in package
  assert kaldi.sha256 == hashlib.sha256(KALDI_STAND_IN.encode()).hexdigest()
  assert set(sys.modules) == before  # the stand-in was only there while the file ran


def test_kaldi_source_names_what_it_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"torchaudio wheel \(\.whl\).*kaldi\.py"):
    upstream_beats.load_kaldi(tmp_path)


def test_fairseq_config_yaml_reads_exponents_as_omegaconf_does():
  text = "a: 1e-6\nb: 1.0e-6\nc: 5\nd: '1e-6'\ne: [0.9,0.95]\n"
  assert generator.yaml.load(text, Loader=generator._OmegaConfYaml) == {  # pylint: disable=protected-access
      "a": 1e-6, "b": 1e-6, "c": 5, "d": "1e-6", "e": [0.9, 0.95]}


def test_hf_names_of_the_encoder_keys(fixtures):
  hf = json.loads((fixtures / "eat_base_keys.json").read_text())["hf_safetensors_keys"]
  assert [generator.hf_name(e["fairseq_key"]) for e in hf] == [e["key"] for e in hf]
  assert generator.hf_name("modality_encoders.IMAGE.context_encoder.norm.bias") == "model.pre_norm.bias"


def test_relative_difference_of_regenerated_arrays():
  a = np.linspace(-2, 2, 11, dtype=np.float32)
  assert generator.relative_difference(a, a) == 0
  assert generator.relative_difference(a + np.float32(1e-6), a) == pytest.approx(1e-6 / 2, rel=0.05)
  assert generator.relative_difference(a[:-1], a) == math.inf
  assert generator.relative_difference(a.astype(np.float64), a) == math.inf
  assert generator.relative_difference(np.array([398, 397]), np.array([398, 398])) == math.inf


# ---------------------------------------------------------------------------------------------------------
# Upstream-gated: the generator reproduces the committed files.

def test_the_generator_reproduces_the_committed_fixtures(upstream_beats_dir, upstream_eat_dir, torchaudio_source,
                                                         fixtures, tmp_path):
  made = tmp_path / "made"
  names = generator.make(upstream_beats_dir, upstream_eat_dir, torchaudio_source, made,
                         generator.read_wav(fixtures / "beats_tiny_io.npz"))
  assert names == sorted(p.name for p in fixtures.iterdir() if p.name != "README.md")
  figures, recomputed = {}, []
  for name in names:
    if name.endswith(".npz"):
      recomputed.append(name)
      with np.load(made / name) as new, np.load(fixtures / name) as old:
        assert new.files == old.files, name
        for key in old.files:
          figures[f"{name}:{key}"] = generator.relative_difference(new[key], old[key])
          if key in ("wav", "num_frames", "mask", "about"):  # inputs, integers and metadata: exact
            np.testing.assert_array_equal(new[key], old[key], err_msg=f"{name}:{key}")
    elif name != "manifest.json":
      assert (made / name).read_bytes() == (fixtures / name).read_bytes(), f"{name} is not byte-identical"
  print(json.dumps(figures, indent=1))
  assert {k: v for k, v in figures.items() if not v <= generator.REGENERATED_RTOL} == {}
  new, old = (json.loads((folder / "manifest.json").read_text()) for folder in (made, fixtures))
  for manifest in (new, old):  # the recomputed files' digests are the one expected difference
    for name in recomputed:
      del manifest["files"][name]["sha256"], manifest["files"][name]["bytes"]
  assert new == old
