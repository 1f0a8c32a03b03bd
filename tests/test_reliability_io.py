"""Model files that are finite but invalid, crafted or mislabelled: checked after the
cast to the model's dtype, in each layer's domain, member by member from the headers."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.saving import npz as io
from tests.helpers import assert_load_refused_within


def mlp() -> pn.Sequential:
    return pn.Sequential([pn.Dense(4, 3), pn.BatchNorm(3), pn.ReLU(), pn.Dense(3, 2)],
                         backend="numpy", seed=0)


def parts(tmp_path: Path, model: pn.Sequential | None = None) -> tuple[dict, dict]:
    path = pn.save(model or mlp(), tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != io.METADATA_KEY}
    return io.load_metadata(path), arrays


def write(path: Path, metadata: object, arrays: dict[str, np.ndarray]) -> Path:
    raw = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays, **{io.METADATA_KEY: raw})
    return path


def test_a_member_is_checked_from_its_header_before_its_data_is_read(tmp_path: Path) -> None:
    """0.W declares 4000x4000 float32 (64 MB of zeros, deflated to about 60 kB): refused
    from its header, with no buffer of its size allocated."""
    metadata, arrays = parts(tmp_path)
    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("0.W.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (4000, 4000)})
            for _ in range(16):
                f.write(bytes(4_000_000))
        for name, value in arrays.items():
            if name != "0.W":
                with archive.open(f"{name}.npy", "w") as f:
                    np.lib.format.write_array(f, value)
        with archive.open(f"{io.METADATA_KEY}.npy", "w") as f:
            np.lib.format.write_array(
                f, np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8))
    assert path.stat().st_size < 200_000
    assert_load_refused_within(path, r"0\.W is \(4000, 4000\), its layer declares", 2_000_000)


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    metadata, arrays = parts(tmp_path)
    path = write(tmp_path / "twice.npz", metadata, arrays)
    with zipfile.ZipFile(path, "a") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name"
        with archive.open("3.W.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"holds 3\.W\.npy more than once"):
        pn.load(path, backend="numpy")


def test_values_are_checked_after_the_cast_to_the_model_dtype(tmp_path: Path) -> None:
    metadata, arrays = parts(tmp_path)
    arrays["3.W"] = arrays["3.W"].astype(np.float64)
    arrays["3.W"][0, 0] = 1e300  # finite in the file, inf in the float32 model
    path = write(tmp_path / "big.npz", metadata, arrays)
    with pytest.raises(ValueError, match=r"3\.W hold NaN or infinite values in float32"):
        pn.load(path, backend="numpy")
    model = pn.load(path, backend="numpy", dtype="float64")  # fits there
    assert model.state_dict()["3.W"][0, 0] == 1e300


def test_a_negative_running_variance_is_refused(tmp_path: Path) -> None:
    metadata, arrays = parts(tmp_path)
    arrays["1.running_var"][1] = -0.5
    path = write(tmp_path / "var.npz", metadata, arrays)
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm.*running_var holds negative "
                                         r"values \(down to -0\.5\)"):
        pn.load(path, backend="numpy")


@pytest.mark.parametrize("version", ["2", 2.0, 0, True, None])
def test_a_format_version_that_is_not_a_whole_number(tmp_path: Path, version) -> None:
    metadata, arrays = parts(tmp_path)
    metadata["format_version"] = version
    path = write(tmp_path / "v.npz", metadata, arrays)
    with pytest.raises(ValueError, match=r"format_version is .*not a whole number from 1 to 2")\
            as info:
        pn.load(path, backend="numpy")
    assert "newer" not in str(info.value)


def test_a_newer_format_says_upgrade(tmp_path: Path) -> None:
    metadata, arrays = parts(tmp_path)
    metadata["format_version"] = 3
    path = write(tmp_path / "v3.npz", metadata, arrays)
    with pytest.raises(ValueError, match=r"model format 3, newer .*\(1 to 2\); upgrade"):
        pn.load(path, backend="numpy")


def test_a_npy_file_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros((3, 3)))
    for call in (pn.load, io.load_metadata):
        with pytest.raises(ValueError, match=r"single NumPy array \(\.npy\), not a portanet "
                                             r"model"):
            call(path)


def test_an_archive_member_that_is_not_an_array(tmp_path: Path) -> None:
    metadata, arrays = parts(tmp_path)
    path = write(tmp_path / "extra.npz", metadata, arrays)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ValueError, match="'notes.txt', which is not an array"):
        pn.load(path, backend="numpy")


def test_a_cnn_file_without_input_shape_gets_advice_a_user_can_follow(tmp_path: Path) -> None:
    cnn = pn.Sequential([pn.Conv2D(1, 2, 3), pn.ReLU(), pn.Flatten(), pn.Dense(2 * 26 * 26, 3)],
                        backend="numpy", seed=0)
    metadata, arrays = parts(tmp_path, cnn)
    assert metadata["input_shape"] is None
    path = write(tmp_path / "cnn.npz", metadata, arrays)
    with pytest.raises(ValueError, match=r"does not record the shape of the images its first "
                                         r"layer \(Conv2D") as info:
        pn.load(path, backend="numpy")
    message = str(info.value)
    assert "X.reshape" not in message  # API advice a command-line user cannot follow
    command = message.split('python -c "')[1].split('"')[0]
    exec(command, {})  # the advice, followed as given
    assert pn.load(path, backend="numpy").input_shape == (1, 28, 28)


def test_metadata_that_would_be_huge_is_not_read(tmp_path: Path) -> None:
    metadata, arrays = parts(tmp_path)
    np.savez(tmp_path / "meta.npz", **arrays, **{io.METADATA_KEY: np.zeros(2 << 20, np.uint8)})
    with pytest.raises(ValueError, match="not up to 1,048,576 bytes of JSON"):
        pn.load(tmp_path / "meta.npz", backend="numpy")
