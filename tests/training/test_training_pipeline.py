"""fit -> evaluate -> export on a slice of the real UCM-Captions data, through the real entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.training, pytest.mark.slow]

TRAIN_ARGS = ["--train-limit", "32", "--val-limit", "12", "--batch-size", "8", "--lr", "2e-3",
              "--warmup-steps", "2", "--no-progress", "--seed", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def ucm_json(shared_data: Path) -> Path:
    path = shared_data / "ucm_captions" / "dataset.json"
    if not path.is_file():
        pytest.skip(f"UCM-Captions not found at {path}")
    return path


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.testing import tiny_model_config

    cfg = tiny_model_config()
    cfg["text_cfg"]["context_length"] = 32
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def trained_run(ucm_json: Path, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 epochs x 4 steps on 32 images of all classes, all three objectives, no augmentation."""
    from training.fit import main

    run = tmp_path_factory.mktemp("runs") / "run"
    argv = ["--data", str(ucm_json), "--run-dir", str(run), "--model", str(tiny_config), "--epochs", "10",
            "--eval-every", "5", "--no-augment", "--bdm-weight", "0.1", "--triplet-weight", "1",
            "--queue-size", "32", *TRAIN_ARGS]  # fmt: skip
    assert main(argv) == 0
    return run


def _history(run: Path) -> list[dict[str, str]]:
    import csv

    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_training_lowers_the_loss_and_writes_the_run_folder(trained_run: Path) -> None:
    rows = _history(trained_run)
    assert len(rows) == 10 and rows[-1]["step"] == "40"
    assert [r["epoch"] for r in rows if r["val_mR"]] == ["5", "10"]
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.9 * first, (first, last)
    for part in ("loss_infonce", "loss_bdm", "loss_triplet"):
        assert float(rows[-1][part]) < float(rows[0][part]), part
    names = {p.name for p in trained_run.iterdir()}
    assert {"params.json", "metrics.csv", "metrics.png", "last.pt", "best.pt"} <= names
    params = json.loads((trained_run / "params.json").read_text())
    assert params["params"]["triplet_weight"] == 1.0 and params["data"]["n_classes"] > 1
    best = torch.load(trained_run / "best.pt", weights_only=True)
    assert best["metrics"]["n_images"] == 12 and "optimizer" not in best
    assert float(rows[int(best["epoch"]) - 1]["val_mR"]) == max(float(r["val_mR"]) for r in rows if r["val_mR"])


def test_resume_continues_exactly(ucm_json: Path, tiny_config: Path, tmp_path: Path) -> None:
    from training.fit import main

    common = ["--data", str(ucm_json), "--model", str(tiny_config), *TRAIN_ARGS]
    assert main([*common, "--run-dir", str(tmp_path / "full"), "--epochs", "2"]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "cut"), "--epochs", "2", "--max-steps", "4"]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "cut"), "--epochs", "2", "--resume", "auto"]) == 0
    full, cut = _history(tmp_path / "full"), _history(tmp_path / "cut")
    assert [r["step"] for r in cut] == ["4", "8"]
    assert float(cut[1]["loss"]) == pytest.approx(float(full[1]["loss"]), rel=1e-4)


def test_caption_positives_train_through_the_entry_point(ucm_json: Path, tiny_config: Path, tmp_path: Path) -> None:
    from training.fit import main

    common = ["--data", str(ucm_json), "--model", str(tiny_config), *TRAIN_ARGS, "--epochs", "1", "--batch-size", "32",
              "--max-steps", "1"]  # fmt: skip
    assert main([*common, "--run-dir", str(tmp_path / "plain")]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "positives"), "--caption-positives"]) == 0
    plain, positives = _history(tmp_path / "plain"), _history(tmp_path / "positives")
    params = json.loads((tmp_path / "positives" / "params.json").read_text())["params"]
    assert params["caption_positives"] is True
    # the same seed and batch: all 32 images, three of them farmland with captions repeated word for word
    assert float(positives[0]["loss"]) != pytest.approx(float(plain[0]["loss"]), rel=1e-4)


def test_fit_refuses_bad_input(ucm_json: Path, trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    from training.fit import main

    assert main(["--data", str(ucm_json), "--run-dir", str(trained_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run folder") and "--overwrite" in err and len(err.splitlines()) == 1
    assert main(["--data", "nope.json", "--run-dir", "x"]) == 2
    assert main(["--data", str(ucm_json), "--run-dir", "x", "--model", "no-such-model"]) == 2
    assert main(["--data", str(ucm_json), "--run-dir", "x", "--unlocked-image-groups", "2"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and errors[-1] == "error: --unlocked-image-groups needs --lock-image"


def test_export_then_evaluate_agree(ucm_json: Path, trained_run: Path, tmp_path: Path, capsys) -> None:
    from training.evaluate import main as evaluate_main
    from training.export import main as export_main

    out = tmp_path / "models" / "ucm-tiny"
    assert export_main(["--checkpoint", str(trained_run / "best.pt"), "--out", str(out), "--parity-images", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert max(report["parity"].values()) < 1e-4 and report["engine_max_abs_diff"] < 1e-4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["text"]["tokenizer"] == {"kind": "clip_bpe", "context_length": 32,
                                             "vocab": "vocab/bpe_simple_vocab_16e6.txt.gz"}  # fmt: skip
    assert manifest["metrics"]["val"]["n_images"] == 12 and manifest["training"]["epoch"] >= 1
    # UCM-Captions: 0.3048 m pixels, 256 px images shown to the model at its input size
    assert manifest["ground_m_per_px"] == pytest.approx(0.3048 * 256 / manifest["image"]["size"])
    assert report["ground_m_per_px"] == manifest["ground_m_per_px"]
    results = {}
    for source in (out, trained_run / "best.pt"):
        args = ["--model", str(source), "--data", str(ucm_json), "--split", "val", "--limit", "40", "--json"]
        assert evaluate_main(args) == 0
        results[source.name] = json.loads(capsys.readouterr().out)
    engine, torch_ = results["ucm-tiny"], results["best.pt"]
    assert list(engine) == ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mR",
                            "n_images", "n_captions"]  # fmt: skip
    assert engine == torch_ and engine["n_images"] == 40 and engine["n_captions"] == 200
    assert evaluate_main(["--model", str(out), "--data", str(ucm_json), "--limit", "20", "--rerank"]) == 0
    assert "re-ranking" in capsys.readouterr().out


def test_export_fails_loudly_and_leaves_nothing(trained_run: Path, tmp_path: Path, capsys) -> None:
    from training.export import main as export_main

    out = tmp_path / "broken"
    code = export_main(["--checkpoint", str(trained_run / "best.pt"), "--out", str(out), "--tolerance", "1e-12",
                        "--parity-images", "2"])  # fmt: skip
    assert code == 1 and "verification failed" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert export_main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert export_main(["--checkpoint", str(trained_run / "best.pt"), "--out", str(out), "--image-ground-m", "-1"]) == 2
    assert "--image-ground-m" in capsys.readouterr().err


def test_int8_export_reports_retrieval_change(trained_run: Path, tmp_path: Path, capsys) -> None:
    from training.export import main as export_main

    out = tmp_path / "int8"
    assert export_main(["--checkpoint", str(trained_run / "best.pt"), "--out", str(out), "--quantize", "int8",
                        "--parity-images", "2", "--image-ground-m", "0.5"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["quantize"] == "int8" and "mR_change" in report
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ground_m_per_px"] == pytest.approx(0.5 * 256 / manifest["image"]["size"])
    assert report["sizes"]["text.onnx"]["bytes"] < report["sizes"]["text.onnx"]["bytes_fp32"]


def test_fit_mixes_a_class_folder_and_tags_then_reports_zero_shot(ucm_json: Path, tiny_config: Path, tmp_path: Path,
                                                                   capsys) -> None:  # fmt: skip
    import numpy as np
    from PIL import Image

    from training.evaluate import main as evaluate_main
    from training.export import main as export_main
    from training.fit import main

    rng = np.random.default_rng(0)
    folder = tmp_path / "scenes"
    for name in ("Pond", "RailwayStation", "Desert"):
        (folder / name).mkdir(parents=True)
        for i in range(6):  # 6 per class: 4 train, 2 held out
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / name / f"{i}.jpg")
    tags = ucm_json.parent / "multilabels.tsv"
    run = tmp_path / "run"
    argv = ["--data", str(ucm_json), "--run-dir", str(run), "--model", str(tiny_config), "--epochs", "2",
            "--data-folder", str(folder), "--folder-holdout", "2", "--folder-weight", "2", "--tags", str(tags),
            "--tag-captions", "2", "--select", "combined", *TRAIN_ARGS]  # fmt: skip
    assert main(argv) == 0
    rows = _history(run)
    assert rows[0]["step"] == "7"  # (32 caption images + 2 x 12 folder images) / batch 8
    assert 0 <= float(rows[-1]["val_zs_top1"]) <= float(rows[-1]["val_zs_top5"]) <= 1
    assert 0 <= float(rows[-1]["val_tag_p10"]) <= 1
    params = json.loads((run / "params.json").read_text())
    sources = params["data"]["sources"]
    assert sources["folder"]["classes"] == ["Desert", "Pond", "RailwayStation"]
    assert sources["folder"]["n_train_images"] == 12 and sources["folder"]["n_val_images"] == 6
    assert sources["tags"]["captions_per_image"] == 2 and params["data"]["n_classes"] > 3
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["selected_by"] == "combined" and set(best["extra_metrics"]) == {"tag_p10", "zs_top1", "zs_top5"}

    out = tmp_path / "model"
    assert export_main(["--checkpoint", str(run / "best.pt"), "--out", str(out), "--parity-images", "2"]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["val_extra"]["zs_top1"] == best["extra_metrics"]["zs_top1"]
    assert manifest["training"]["data"]["sources"]["folder"]["holdout_per_class"] == 2
    results = []
    for source in (out, run / "best.pt"):  # the engine and torch classify the held-out images alike
        args = ["--model", str(source), "--zero-shot", str(folder), "--holdout", "2", "--json"]
        assert evaluate_main(args) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1] and results[0]["zs_n_images"] == 6 and results[0]["zs_n_classes"] == 3
    assert results[0]["zs_top1"] == pytest.approx(best["extra_metrics"]["zs_top1"])
    assert evaluate_main(["--model", str(out), "--data", str(ucm_json), "--limit", "20", "--tags", str(tags)]) == 0
    assert "object-tag precision@10" in capsys.readouterr().out
    assert evaluate_main(["--model", str(out), "--zero-shot", str(folder), "--holdout", "2", "--zero-shot-crop",
                          "0.5", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["zs_n_images"] == 6
    assert evaluate_main(["--model", str(out)]) == 2
    assert evaluate_main(["--model", str(out), "--zero-shot", str(folder), "--zero-shot-crop", "0"]) == 2
    assert main([*argv[:2], "--run-dir", str(tmp_path / "x"), "--tag-captions", "2"]) == 2
    assert main([*argv[:2], "--run-dir", str(tmp_path / "x"), "--data-folder", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--zero-shot-crop must be a fraction" in "".join(err)
    assert err[-2:] == ["error: --tag-captions needs --tags (the multilabels.tsv file)",
                        f"error: image folder '{tmp_path / 'none'}' does not exist"]  # fmt: skip


def test_rotation_averaged_export_is_rotation_invariant(trained_run: Path, ucm_json: Path, tmp_path: Path,
                                                        capsys) -> None:  # fmt: skip
    import numpy as np

    from rs_text_search.core.model import load_model
    from training.data import load_image, load_records
    from training.evaluate import with_views
    from training.export import main as export_main

    common = ["--checkpoint", str(trained_run / "best.pt"), "--parity-images", "2"]
    assert export_main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert export_main([*common, "--out", str(tmp_path / "rot4"), "--rotations", "4"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "rot4" / "manifest.json").read_text())["training"]["test_time_rotations"] == 4
    plain, rot4 = load_model(tmp_path / "plain", provider="cpu"), load_model(tmp_path / "rot4", provider="cpu")
    image = load_image(load_records(ucm_json, "val")[0].path)
    turned = [np.ascontiguousarray(np.rot90(image, k)) for k in range(4)]
    embedded = rot4.embed_images(turned)
    assert np.abs(embedded - embedded[0]).max() < 1e-5  # every quarter turn embeds alike
    assert np.abs(plain.embed_images(turned) - plain.embed_images(turned)[0]).max() > 1e-3  # the plain one does not
    # the same average evaluate --tta rot4 takes outside the graph
    assert np.abs(embedded[:1] - with_views(plain.embed_images, "rot4")([image])).max() < 1e-4
    assert export_main([*common, "--out", str(tmp_path / "x"), "--rotations", "3"]) == 2


def test_a_second_stage_starts_from_a_fit_checkpoint(ucm_json: Path, tiny_config: Path, trained_run: Path,
                                                     tmp_path: Path) -> None:  # fmt: skip
    from training.fit import main

    common = ["--data", str(ucm_json), "--model", str(tiny_config), "--epochs", "1", "--no-augment", *TRAIN_ARGS]
    assert main([*common, "--run-dir", str(tmp_path / "fresh")]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "stage2"), "--pretrained", str(trained_run / "best.pt")]) == 0
    fresh, stage2 = float(_history(tmp_path / "fresh")[0]["loss"]), float(_history(tmp_path / "stage2")[0]["loss"])
    first_epoch_of_stage1 = float(_history(trained_run)[0]["loss_infonce"])  # the same objective
    assert stage2 < 0.9 * fresh and stage2 < first_epoch_of_stage1, (fresh, stage2)
