"""Fine-tuning, evaluation, the registry, promotion and hot swap, with tiny models (fast)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from connector.config import parse_config
from connector.model.classifier import META_FILE, ClassifierHolder, FieldModel, ModelLoadError
from connector.model.data import LabeledData, load_labeled_file, split
from connector.model.registry import ModelRegistry, RegistryError
from connector.model.serving import ModelReloader, active_model_dirs
from connector.model.settings import TrainingSettings
from connector.model.train import TrainedModel, TrainingCancelled, TrainingError, train_field, train_models
from connector.store.db import Store
from tests.support.paths import SAMPLE_TICKETS
from tests.support.tiny_model import build_tiny_model, write_easy_tickets

FAST = TrainingSettings(epochs=2, batch_size=16, max_length=32, learning_rate=1e-3, early_stopping_patience=1)


@pytest.fixture(scope="module")
def sample() -> LabeledData:
    data = load_labeled_file(SAMPLE_TICKETS)
    small, _ = split(data, 0.7, seed=1)  # ~125 examples keeps the tiny runs quick
    return small


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("base") / "tiny", ["x", "y"], version="base")


@pytest.fixture(scope="module")
def trained(sample: LabeledData, tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    out = tmp_path_factory.mktemp("models")
    return train_field(sample, "queue", output_dir=out, settings=FAST, base_model=tiny_base, device="cpu", version="v1")


def test_train_field_writes_a_complete_versioned_directory(trained: TrainedModel, sample: LabeledData) -> None:
    path = trained.path
    assert path.name == "v1" and path.parent.name == "queue"
    names = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", META_FILE} <= names
    assert not any(n.endswith(".bin") for n in names)
    # nothing half-written left beside it
    assert [p.name for p in path.parent.iterdir()] == ["v1"]
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    assert meta["version"] == "v1" and meta["field"] == "queue"
    assert meta["labels"] == sorted(sample.labels_of("queue"))
    assert meta["label2id"] == {label: i for i, label in enumerate(meta["labels"])}
    assert meta["data_fingerprint"] == sample.fingerprint()
    assert meta["training"]["settings"]["epochs"] == 2
    assert meta["training"]["samples_per_second"] > 0
    assert 0.0 <= meta["metrics"]["macro_f1"] <= 1.0
    assert len(meta["metrics"]["confusion_matrix"]) == 6
    assert meta["metrics"]["target_precision"] == 0.9


def test_trained_model_loads_with_transformers_pipeline(trained: TrainedModel) -> None:
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(trained.path), device="cpu")
    out = clf(["my printer is broken", "invoice is wrong"])
    assert [o["label"] for o in out] and all(o["label"] in trained.labels for o in out)


def test_trained_model_loads_with_field_model(trained: TrainedModel) -> None:
    model = FieldModel(trained.path, device=torch.device("cpu"), expected_labels=trained.labels)
    preds = model.predict(["printer broken", "password reset"])
    assert len(preds) == 2 and preds[0].label in trained.labels
    assert model.version == "v1"
    assert TrainedModel.from_dir(trained.path).labels == trained.labels


def test_fine_tuning_learns_an_easy_task(tiny_base: Path, tmp_path: Path) -> None:
    data = load_labeled_file(write_easy_tickets(tmp_path / "easy.csv"))
    settings = TrainingSettings(epochs=8, batch_size=16, max_length=32, learning_rate=5e-3, early_stopping_patience=8)
    model = train_field(data, "queue", output_dir=tmp_path / "out", settings=settings, base_model=tiny_base, device="cpu")
    history = model.training["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert model.metrics["accuracy"] >= 0.9
    served = FieldModel(model.path, device=torch.device("cpu")).predict(["my printer and vpn are broken", "invoice for purchase"])
    assert [p.label for p in served] == ["it", "finance"]


def test_a_failed_save_leaves_nothing(sample: LabeledData, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import PreTrainedModel

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(args[0], "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        train_field(sample, "queue", output_dir=tmp_path, settings=FAST.model_copy(update={"epochs": 1}), base_model=tiny_base, device="cpu")
    assert list((tmp_path / "queue").iterdir()) == []


def test_cancel_stops_training_and_writes_nothing(sample: LabeledData, tiny_base: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrainingCancelled):
        train_field(sample, "queue", output_dir=tmp_path, settings=FAST, base_model=tiny_base, device="cpu", cancel=cancel)
    assert not (tmp_path / "queue").exists() or list((tmp_path / "queue").iterdir()) == []


def test_missing_base_model_is_a_training_error(sample: LabeledData, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="does not exist"):
        train_field(sample, "queue", output_dir=tmp_path, settings=FAST, base_model=tmp_path / "nope", device="cpu")


def test_progress_callback_reaches_one(sample: LabeledData, tiny_base: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    train_field(
        sample, "priority", output_dir=tmp_path, settings=FAST.model_copy(update={"epochs": 1}), base_model=tiny_base,
        device="cpu", progress=lambda f, _m: seen.append(f),
    )
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0.0 in seen


@pytest.mark.slow
def test_train_models_trains_every_field_with_the_baseline(sample: LabeledData, tiny_base: Path, tmp_path: Path) -> None:
    run = train_models(sample, output_dir=tmp_path, settings=FAST.model_copy(update={"epochs": 1}), base_model=tiny_base, device="cpu")
    assert set(run.models) == {"queue", "priority"} == set(run.baselines)
    assert run.models["queue"].version == run.models["priority"].version == run.version
    assert len(run.holdout) > 0 and set(run.holdout.texts) <= set(sample.texts)
    assert run.models["queue"].training["train_examples"] == len(sample) - len(run.holdout)
    # on this small part of the sample data the baseline is well above chance (1/6)
    assert run.baselines["queue"].macro_f1 > 0.4
    summary = run.as_dict()
    assert summary["fields"]["queue"]["linear_baseline"]["macro_f1"] == round(run.baselines["queue"].macro_f1, 4)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_model_directories_follow_the_umask(sample: LabeledData, tiny_base: Path, tmp_path: Path, umask: int) -> None:
    """A model trained by one user (an admin) must be readable by the daemon's user: no 0700 directories."""
    import os
    import stat

    previous = os.umask(umask)
    try:
        run = train_models(
            sample, ["queue"], output_dir=tmp_path / "models", settings=FAST.model_copy(update={"epochs": 1}),
            base_model=tiny_base, device="cpu", save_baseline=True,
        )  # fmt: skip
    finally:
        os.umask(previous)
    roots = [run.models["queue"].path, run.baseline_models["queue"].path]
    entries = [p for root in roots for p in [root, *root.rglob("*")]]
    assert len(entries) > 5
    for path in entries:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path}: {oct(path.stat().st_mode)}"


# --------------------------------------------------------------------------- bad model directories


def test_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        FieldModel(tmp_path / "missing", device=torch.device("cpu"))


def test_corrupt_weights(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m", ["a", "b"])
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cannot load"):
        FieldModel(path, device=torch.device("cpu"))


def test_label_count_mismatch_between_config_and_weights(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m", ["a", "b", "c"])
    cfg = json.loads((path / "config.json").read_text())
    cfg["id2label"] = {"0": "a", "1": "b"}
    cfg["label2id"] = {"a": 0, "b": 1}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError):
        FieldModel(path, device=torch.device("cpu"))


def test_label_count_mismatch_with_metadata(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m", ["a", "b", "c"])
    (path / META_FILE).write_text(json.dumps({"version": "x", "field": "queue", "labels": ["a", "b"]}))
    with pytest.raises(ModelLoadError, match="3 labels"):
        FieldModel(path, device=torch.device("cpu"))


def test_label_mismatch_with_configured_labels(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m", ["a", "b"])
    with pytest.raises(ModelLoadError, match="do not match"):
        FieldModel(path, device=torch.device("cpu"), expected_labels=["a", "b", "c"])


# --------------------------------------------------------------------------- registry


def _tiny_trained(base: Path, field: str, version: str, labels: list[str], seed: int = 0, f1: float = 0.5) -> TrainedModel:
    path = build_tiny_model(base / field / version, labels, version=version, field=field, seed=seed)
    return TrainedModel(
        field=field, version=version, path=path, labels=labels, base_model="tiny", data_fingerprint="f" * 64,
        created_at=__import__("datetime").datetime.now(__import__("datetime").UTC), metrics={"macro_f1": f1, "accuracy": f1},
        training={"history": []},
    )


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(Store(f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path / "models")


def test_register_activate_list_rollback(registry: ModelRegistry) -> None:
    base = registry.models_dir
    registry.register(_tiny_trained(base, "queue", "v1", ["A", "B"]))
    registry.register(_tiny_trained(base, "queue", "v2", ["A", "B", "C"]))
    assert registry.active() == {}
    registry.activate("v1")
    assert registry.active()["queue"].version == "v1"
    registry.activate("v2")
    active = registry.active()
    assert active["queue"].version == "v2"
    assert [i.version for i in registry.list("queue") if i.active] == ["v2"]  # one active per field
    registry.register(_tiny_trained(base, "queue", "v3", ["A", "B"]), activate=True)
    rolled = registry.rollback()
    assert [(i.field, i.version) for i in rolled] == [("queue", "v2")]
    assert registry.rollback()[0].version == "v1"  # walks further back
    assert registry.active()["queue"].version == "v1"
    with pytest.raises(RegistryError, match="no earlier"):
        registry.rollback()
    hist = registry.history("queue")
    assert [(h["previous_version"], h["version"]) for h in hist] == [
        (None, "v1"), ("v1", "v2"), ("v2", "v3"), ("v3", "v2"), ("v2", "v1")
    ]
    # activating again after rollbacks starts a new step to roll back from
    registry.activate("v3")
    assert registry.rollback()[0].version == "v1"


def test_activate_unknown_or_broken_version_changes_nothing(registry: ModelRegistry) -> None:
    base = registry.models_dir
    registry.register(_tiny_trained(base, "queue", "v1", ["A", "B"]), activate=True)
    broken = _tiny_trained(base, "queue", "v2", ["A", "B"])
    (broken.path / "model.safetensors").write_bytes(b"corrupt")
    registry.register(broken)
    with pytest.raises(RegistryError):
        registry.activate("v9")
    with pytest.raises(ModelLoadError):
        registry.activate("v2")
    assert registry.active()["queue"].version == "v1"
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(_tiny_trained(base / "again", "queue", "v1", ["A", "B"]))


def test_prune_keeps_the_newest_and_the_active(registry: ModelRegistry) -> None:
    base = registry.models_dir
    for n in range(1, 6):
        registry.register(_tiny_trained(base, "queue", f"v{n}", ["A", "B"]))
        time.sleep(0.01)
    registry.activate("v1")
    removed = registry.prune(keep=2)
    assert sorted(i.version for i in removed) == ["v2", "v3", "v4"]
    assert sorted(i.version for i in registry.list("queue")) == ["v1", "v5"]
    assert not (base / "queue" / "v3").exists() and (base / "queue" / "v1").exists()


def test_promotion_scores_champion_and_challenger_on_the_same_holdout(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    base = registry.models_dir
    holdout = LabeledData(["a", "b", "c", "d"], {"queue": ["A", "B", "A", "B"]})
    scores = {"v1": 0.80, "v2": 0.797, "v3": 0.70, "v4": 0.81}
    calls: list[tuple[str, int]] = []

    def fake_score(self, path, data, field, *, kind="transformer"):  # type: ignore[no-untyped-def]
        calls.append((Path(path).name, len(data)))
        return scores[Path(path).name]

    monkeypatch.setattr(ModelRegistry, "score", fake_score)
    d1 = registry.promote_if_better(_tiny_trained(base, "queue", "v1", ["A", "B"]), holdout)
    assert d1.promoted and d1.reason == "no usable active model"
    d2 = registry.promote_if_better(_tiny_trained(base, "queue", "v2", ["A", "B"]), holdout, epsilon=0.005)
    assert d2.promoted and d2.champion_version == "v1"  # within epsilon
    d3 = registry.promote_if_better(_tiny_trained(base, "queue", "v3", ["A", "B"]), holdout, epsilon=0.005)
    assert not d3.promoted and "lower" in d3.reason
    assert registry.active()["queue"].version == "v2"
    assert {n for _, n in calls} == {4}
    d4 = registry.promote_if_better(_tiny_trained(base, "queue", "v4", ["A", "B"]), holdout, min_gain=0.05)
    assert not d4.promoted and "gain" in d4.reason
    d5 = registry.promote_if_better(registry.get("queue", "v3"), holdout, force=True)
    assert d5.promoted and d5.reason == "forced"
    assert registry.active()["queue"].version == "v3"


def test_promotion_with_real_scoring(registry: ModelRegistry, trained: TrainedModel, sample: LabeledData) -> None:
    base = registry.models_dir
    _train, holdout = split(sample, 0.3, seed=3)
    decision = registry.promote_if_better(trained, holdout)
    assert decision.promoted
    assert decision.holdout_examples == len(holdout)
    # the same model again is already active: nothing changes
    again = registry.promote_if_better(registry.get("queue", "v1"), holdout)
    assert not again.promoted and again.reason == "already active"
    _ = base


# --------------------------------------------------------------------------- serving and hot swap


def test_hot_swap_while_classifying(tmp_path: Path) -> None:
    config = parse_config({"state_dir": str(tmp_path), "model": {"fields": ["queue"], "device": "cpu", "batch_size": 4}})
    store = Store(config.store_url)
    registry = ModelRegistry(store, config.models_dir)
    registry.register(_tiny_trained(config.models_dir, "queue", "v1", ["A", "B"]), activate=True)
    registry.register(_tiny_trained(config.models_dir, "queue", "v2", ["C", "D", "E"], seed=1))
    assert active_model_dirs(config, store)["queue"].name == "v1"

    holder = ClassifierHolder()
    reloader = ModelReloader(config, store, holder)
    reloader.load_initial()
    labels_of = {"queue=v1": {"A", "B"}, "queue=v2": {"C", "D", "E"}}
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    texts = [f"printer {i} broken please help" for i in range(12)]

    def classify_loop() -> None:
        while not stop.is_set():
            try:
                classifier = holder.current  # one reference per batch
                preds = classifier.classify(texts)
                versions = {p.model_version for p in preds}
                assert len(preds) == len(texts) and len(versions) == 1
                version = versions.pop()
                assert {p.fields["queue"].label for p in preds} <= labels_of[version]
                seen.append(version)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    worker = threading.Thread(target=classify_loop)
    worker.start()
    try:
        _wait_for(lambda: "queue=v1" in seen)
        assert reloader.check() is False  # nothing changed
        registry.activate("v2")
        assert reloader.check() is True
        _wait_for(lambda: seen[-1:] == ["queue=v2"])
        registry.rollback()
        assert reloader.check() is True
        _wait_for(lambda: seen[-1:] == ["queue=v1"])
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors
    assert holder.current.version == "queue=v1"


def test_reloader_keeps_the_current_model_when_the_new_one_is_broken(tmp_path: Path) -> None:
    config = parse_config({"state_dir": str(tmp_path), "model": {"fields": ["queue"], "device": "cpu"}})
    store = Store(config.store_url)
    registry = ModelRegistry(store, config.models_dir)
    registry.register(_tiny_trained(config.models_dir, "queue", "v1", ["A", "B"]), activate=True)
    v2 = _tiny_trained(config.models_dir, "queue", "v2", ["A", "B"])
    registry.register(v2)
    holder = ClassifierHolder()
    reloader = ModelReloader(config, store, holder)
    reloader.load_initial()
    registry.activate("v2")
    (v2.path / "model.safetensors").write_bytes(b"broken after activation")
    assert reloader.check() is False
    assert holder.current.version == "queue=v1"


def _wait_for(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_cpu_int8_quantisation_keeps_the_predictions(trained: TrainedModel) -> None:
    texts = ["printer broken on floor 2", "password reset please", "invoice wrong", "vpn slow at home"]
    plain = FieldModel(trained.path, device=torch.device("cpu"), cpu_precision="fp32").predict(texts)
    quantised = FieldModel(trained.path, device=torch.device("cpu"), cpu_precision="int8")
    assert quantised.int8
    for a, b in zip(plain, quantised.predict(texts)):
        assert a.label == b.label
        assert abs(a.confidence - b.confidence) < 0.05


def test_cpu_bf16_keeps_the_predictions(trained: TrainedModel, sample: LabeledData) -> None:
    texts = list(sample.texts)[:60]
    plain = FieldModel(trained.path, device=torch.device("cpu"), cpu_precision="fp32")
    bf16 = FieldModel(trained.path, device=torch.device("cpu"), cpu_precision="bf16")
    assert plain.precision == "fp32" and bf16.precision == "bf16"
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    for a, b in zip(plain.predict(texts), bf16.predict(texts)):
        assert abs(a.confidence - b.confidence) < 0.03
        if a.label != b.label:  # only where fp32's two best are within bf16 rounding of each other
            assert a.top_k[0].confidence - a.top_k[1].confidence < 0.03


def test_cpu_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.model import classifier

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(classifier, "cpu_has_bf16_matrix_unit", lambda: True)
    assert classifier.resolve_precision(cpu) == "bf16"
    monkeypatch.setattr(classifier, "cpu_has_bf16_matrix_unit", lambda: False)
    assert classifier.resolve_precision(cpu) == "fp32"
    assert classifier.resolve_precision(cpu, cpu_precision="int8") == "int8"
    assert classifier.resolve_precision(cuda) == "fp16"
    assert classifier.resolve_precision(cuda, half_precision=False, cpu_precision="int8") == "fp32"


def test_configured_cpu_precision_reaches_the_served_models(trained: TrainedModel, tmp_path: Path) -> None:
    from connector.model.serving import load_classifier

    config = parse_config(
        {"state_dir": str(tmp_path), "model": {"fields": ["queue"], "device": "cpu", "cpu_precision": "int8"}}
    )
    classifier = load_classifier(config, Store(config.store_url), {"queue": trained.path})
    assert classifier.models["queue"].precision == "int8"


def test_cpu_batches_cap_padding() -> None:
    from connector.model.classifier import _length_batches

    lengths = [10, 10, 12, 100, 300, 300]
    assert _length_batches(list(range(6)), lengths, 32, None) == [[0, 1, 2, 3, 4, 5]]
    cpu = _length_batches(list(range(6)), lengths, 32, 32 * 64)
    assert cpu == [[0, 1, 2], [3], [4, 5]]
    assert [len(b) for b in _length_batches(list(range(40)), [10] * 40, 32, 32 * 64)] == [32, 8]
    assert max(len(b) for b in _length_batches(list(range(40)), [250] * 40, 32, 32 * 64)) == 8


def test_cpu_training_autocasts_to_bf16_only_with_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.model import train as train_module

    cpu = torch.device("cpu")
    monkeypatch.setattr(train_module, "cpu_has_bf16_matrix_unit", lambda: True)
    assert train_module._autocast_factory(cpu, True)[1] == torch.bfloat16
    assert train_module._autocast_factory(cpu, False)[1] is None  # model.half_precision: false
    monkeypatch.setattr(train_module, "cpu_has_bf16_matrix_unit", lambda: False)
    assert train_module._autocast_factory(cpu, True)[1] is None


def test_one_registry_error_with_a_code_for_the_api() -> None:
    """Issue #14 part 5: the registry and the API's model management raise one RegistryError; its code picks the answer."""
    from connector.api import model_admin

    assert not hasattr(model_admin, "RegistryError") or model_admin.RegistryError is RegistryError
    assert RegistryError("gone").code == "bad_request"
    assert RegistryError("nothing to roll back to", code="conflict").code == "conflict"


def test_the_reloader_publishes_the_versions_it_serves(tmp_path: Path) -> None:
    """Issue #14 part 5: the active versions are published in one place, where models are swapped in."""
    from prometheus_client import generate_latest

    from connector import metrics

    config = parse_config({"state_dir": str(tmp_path), "model": {"fields": ["queue"], "device": "cpu"}})
    store = Store(config.store_url)
    registry = ModelRegistry(store, config.models_dir)
    registry.register(_tiny_trained(config.models_dir, "queue", "p1", ["A", "B"]), activate=True)
    registry.register(_tiny_trained(config.models_dir, "queue", "p2", ["C", "D"], seed=1))
    metrics.set_active_models({})
    reloader = ModelReloader(config, store, ClassifierHolder())
    reloader.load_initial()
    assert 'active_model_info{field="queue",version="p1"} 1.0' in generate_latest(metrics.REGISTRY).decode()
    registry.activate("p2", field="queue")
    assert reloader.check()
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'active_model_info{field="queue",version="p2"} 1.0' in text and 'version="p1"' not in text
