"""The torch-free prestart: the OpenVINO encoder compiles while the worker imports torch.

What it must guarantee: it never imports torch (or the overlap is gone), loading uses what it
made instead of compiling again, its failures end the start as the same errors, and it stays
out of the way whenever only torch can tell the plan (CUDA, the torch encoder, ...). With no
model type it reads the type off the checkpoint without torch, or leaves it to the torch loader. The served
equality of the default path (which runs through it) is tests/test_openvino.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runners import prestart as prestart_module
from runners.converted import compile_for
from runners.converted_engine import ConvertedEngine
from runners.errors import CheckpointError, ConfigError
from runners.pipeline import Pipeline
from runners.prestart import Prestart, prestart
from runners.server_logging import hold, release, use_info_level
from runners.settings import Settings
from tests.conftest import converted_cache_in

pytest.importorskip("openvino")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory, tiny_checkpoint, tiny_conversion) -> Path:
    """A cache holding tiny's converted encoder (the session's conversion), compiled by a prestart."""
    cache = converted_cache_in(tiny_conversion, tmp_path_factory.mktemp("prestart-cache"))
    early = prestart(tiny_settings(tiny_checkpoint, cache))
    assert early is not None
    early.compiled.result(timeout=300)
    return cache


@pytest.fixture
def no_nvidia_driver(monkeypatch, tmp_path):
    monkeypatch.setattr(prestart_module, "NVIDIA_DRIVER_PATHS", (tmp_path / "absent",))


def tiny_settings(checkpoint: Path, cache: Path, **changes) -> Settings:
    base = Settings(model_type="tiny", checkpoint=str(checkpoint), cache_dir=cache, device="cpu", warmup="decoder")
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("changes", [
    {"encoder": "torch"},
    {"attention": "sdpa"},  # the torch encoder's: loading refuses it with the OpenVINO one
    {"device": "cuda"},
    {"precision": "fp16"},  # CUDA only: loading reports it
])
def test_no_prestart_when_the_plan_needs_torch(changes, tiny_checkpoint, tmp_path):
    assert prestart(tiny_settings(tiny_checkpoint, tmp_path, **changes)) is None


def test_device_auto_prestarts_only_without_an_nvidia_driver(monkeypatch, tiny_checkpoint, converted_cache, tmp_path):
    settings = tiny_settings(tiny_checkpoint, converted_cache, device="auto")
    monkeypatch.setattr(prestart_module, "NVIDIA_DRIVER_PATHS", (tmp_path,))  # a driver: torch may pick CUDA
    assert prestart(settings) is None
    monkeypatch.setattr(prestart_module, "NVIDIA_DRIVER_PATHS", (tmp_path / "absent",))
    early = prestart(settings)
    assert isinstance(early, Prestart) and early.precision == "fp32"
    early.compiled.result(timeout=120)


def test_no_prestart_without_openvino(monkeypatch, tiny_checkpoint, tmp_path):
    monkeypatch.setattr(prestart_module, "openvino_available", lambda: False)
    assert prestart(tiny_settings(tiny_checkpoint, tmp_path)) is None


def fresh_interpreter(code: str, checkpoint: Path, cache: Path) -> dict:
    """Run ``code`` in a new interpreter set up for tiny on CPU; the JSON of its last line."""
    env = {**os.environ, "SEGANY_MODEL": "tiny", "SEGANY_CHECKPOINT": str(checkpoint),
           "SEGANY_CACHE_DIR": str(cache), "SEGANY_DEVICE": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_unset_model_type_is_read_off_the_checkpoint_without_torch(tiny_checkpoint, converted_cache):
    """SEGANY_MODEL unset (a SageMaker model artifact, say): the prestart reads the type off the
    checkpoint's shapes, reuses the conversion made for SEGANY_MODEL=tiny (same key), and the
    pipeline serves on the torch-free engine, with torch never imported."""
    code = (
        "import json, os, sys\n"
        "from runners.pipeline import Pipeline\n"
        "from runners.prestart import prestart\n"
        "from runners.settings import Settings\n"
        "settings = Settings.from_env({**os.environ, 'SEGANY_MODEL': ''})\n"
        "early = prestart(settings)\n"
        "pipeline = Pipeline(settings)\n"
        "pipeline.load(early)\n"
        "print(json.dumps({'settings_model': settings.model_type, 'model': early.model_type, 'name': pipeline.model_name,\n"
        "                  'engine': type(pipeline.engine).__name__,\n"
        "                  'imported': sorted(m for m in ('torch', 'segment_anything') if m in sys.modules)}))\n"
    )
    report = fresh_interpreter(code, tiny_checkpoint, converted_cache)
    assert report == {"settings_model": None, "model": "tiny", "name": "tiny", "engine": "ConvertedEngine", "imported": []}


def test_an_unreadable_checkpoint_with_no_model_type_is_left_to_the_torch_loader(no_nvidia_driver, tiny_checkpoint,
                                                                                converted_cache, tmp_path):
    """A checkpoint the torch-free reader does not read (beside the weights it pickles a
    torch.device, which torch's weights-only loader allows): the prestart hands back no compiled
    parts, and the torch loader reads the type and serves, as before."""
    from runners.sam import SamEngine

    odd = tmp_path / "with-a-device.pth"
    torch.save({"model": torch.load(tiny_checkpoint, weights_only=True), "device": torch.device("cpu")}, odd)
    settings = tiny_settings(odd, converted_cache, model_type=None)
    early = prestart(settings)
    assert early is not None and early.compiled.result(timeout=120) is None and early.model_type is None
    pipeline = Pipeline(settings)
    pipeline.load(early)
    assert isinstance(pipeline.engine, SamEngine) and pipeline.model_name == "tiny"


def baked_folder(converted_cache: Path, checkpoint: Path, target: Path, without: str = "") -> Path:
    """The checkpoint's converted folder linked into ``target`` (less the files named ``without*``),
    as `segany build` bakes it into the CPU image: no checkpoint beside it. (Found by its key: other
    tests convert other checkpoints into the same cache.)"""
    from runners.converted import converted_encoder

    target.mkdir()
    for path in converted_encoder(converted_cache, checkpoint, None, "tiny").xml.parent.iterdir():
        if not (without and path.name.startswith(without)):
            (target / path.name).symlink_to(path)
    return target


def test_a_converted_folder_is_served_without_its_checkpoint(tiny_checkpoint, converted_cache, tmp_path):
    """The CPU image's bake (deploy/build.py): SEGANY_OPENVINO_DIR alone, SEGANY_CHECKPOINT and
    SEGANY_MODEL unset. Nothing is resolved or downloaded (offline, vit_h's download would fail),
    the type comes from the folder's manifest, torch is never imported, and the embedding cache is
    keyed by the checkpoint's digest as when the checkpoint is served."""
    import hashlib

    folder = baked_folder(converted_cache, tiny_checkpoint, tmp_path / "openvino")
    code = (
        "import json, os, sys\n"
        "from runners.pipeline import Pipeline\n"
        "from runners.prestart import prestart\n"
        "from runners.settings import Settings\n"
        f"settings = Settings.from_env({{**os.environ, 'SEGANY_MODEL': '', 'SEGANY_CHECKPOINT': '', 'SEGANY_OPENVINO_DIR': {str(folder)!r}}})\n"
        "pipeline = Pipeline(settings)\n"
        "pipeline.load(prestart(settings))\n"
        "print(json.dumps({'name': pipeline.model_name, 'engine': type(pipeline.engine).__name__, 'key': pipeline.cache.model_id,\n"
        "                  'imported': sorted(m for m in ('torch', 'segment_anything') if m in sys.modules)}))\n"
    )
    report = fresh_interpreter(code, tiny_checkpoint, tmp_path / "cache")
    digest = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert report == {"name": "tiny", "engine": "ConvertedEngine", "key": f"tiny:{digest[:12]}:openvino:fp32:exact",
                      "imported": []}


def test_a_converted_folder_needs_its_checkpoint_where_torch_serves(tiny_checkpoint, converted_cache, tmp_path):
    """The folder stands for the checkpoint only where the torch-free engine serves it: not for
    another SEGANY_MODEL, not without a prompt decoder (an older conversion: the torch engine
    needs the weights), not for the torch paths; each stops with the fix named. SEGANY_CHECKPOINT
    set: the named weights are served as before."""
    from runners.converted import served_from_folder

    folder = baked_folder(converted_cache, tiny_checkpoint, tmp_path / "openvino")
    bare = Settings(cache_dir=tmp_path / "cache", device="cpu", openvino_dir=folder)
    checkpoint, model_type = served_from_folder(bare)
    assert model_type == "tiny" and checkpoint.path == folder / "manifest.json"
    with pytest.raises(ConfigError, match="holds a tiny model but SEGANY_MODEL is vit_b: unset SEGANY_MODEL"):
        served_from_folder(dataclasses.replace(bare, model_type="vit_b"))
    assert served_from_folder(dataclasses.replace(bare, checkpoint=str(tiny_checkpoint))) is None  # named: used
    # where the torch engine would serve, it does not go looking for other weights (an official download, say)
    older = baked_folder(converted_cache, tiny_checkpoint, tmp_path / "older", without="prompt_decoder")
    for torch_plan in ({"openvino_dir": older}, {"encoder": "torch"}, {"decoder": "torch"}):
        with pytest.raises(ConfigError, match="set SEGANY_CHECKPOINT to the checkpoint it was converted from"):
            Pipeline(dataclasses.replace(bare, **torch_plan)).load()


def test_prestart_never_imports_torch(tiny_checkpoint, converted_cache):
    """Run where nothing imported torch yet, as in a fresh worker: the whole prestart
    (checkpoint, IR, compile) must finish with torch and segment_anything still unimported."""
    code = (
        "import json, sys\n"
        "from runners.prestart import prestart\n"
        "from runners.settings import Settings\n"
        "early = prestart(Settings.from_env())\n"
        "compiled = early.compiled.result(timeout=300)\n"
        "print(json.dumps({'inputs': [list(i.get_shape()) for i in compiled.encoder.inputs],\n"
        "                  'decoder_inputs': [str(i.get_partial_shape()) for i in compiled.prompts.prompt_decoder.inputs],\n"
        "                  'imported': sorted(m for m in ('torch', 'segment_anything', 'torchvision') if m in sys.modules)}))\n"
    )
    report = fresh_interpreter(code, tiny_checkpoint, converted_cache)
    assert report == {"inputs": [[1, 3, 1024, 1024]], "imported": [],
                      "decoder_inputs": ["[1,256,64,64]", "[?,?,2]", "[?,?]", "[?,1,256,256]", "[1]"]}


@pytest.mark.parametrize("worker_index", [1, None])
def test_a_worker_starts_compiling_as_it_imports_the_service(worker_index, tiny_checkpoint, converted_cache):
    """BentoML sets worker_index before a worker imports the service (the supervisor of bentoml
    serve imports it with None): the worker's compile starts there, torch-free, and the
    service's constructor takes that prestart instead of starting another. Until then the
    worker's log lines are held (BentoML names the worker only after importing the service)."""
    code = (
        "import json, logging, sys, bentoml\n"
        f"bentoml.server_context.worker_index = {worker_index}\n"
        "seen = []\n"
        "class Catch(logging.Handler):\n"
        "    def emit(self, record): seen.append(record.getMessage())\n"
        "logging.getLogger().addHandler(Catch())\n"
        "import service\n"
        "from runners import prestart\n"
        "from runners.server_logging import release\n"
        "started = list(prestart._STARTED)\n"
        "if started:\n"
        "    started[0].compiled.result(timeout=300)\n"
        "imported = sorted(m for m in ('torch', 'segment_anything') if m in sys.modules)\n"
        "logging.getLogger('runners.converted').info('before the service is constructed')\n"
        "shown_early = list(seen)\n"
        "release()\n"
        "taken = prestart.take_prestart(service.SETTINGS)\n"
        "print(json.dumps({'started': len(started), 'imported': imported, 'taken_is_started': bool(started) and taken is started[0],\n"
        "                  'left': len(prestart._STARTED), 'shown_early': len(shown_early),\n"
        "                  'shown_after': 'before the service is constructed' in seen}))\n"
    )
    report = fresh_interpreter(code, tiny_checkpoint, converted_cache)
    in_worker = worker_index is not None
    assert report == {"started": int(in_worker), "imported": [], "taken_is_started": in_worker, "left": 0,
                      # a worker holds its lines until the service is constructed (runners/server_logging.py)
                      "shown_early": 0 if in_worker else 1, "shown_after": True}


def test_the_one_process_worker_starts_compiling_before_bentoml_and_keeps_its_loggers(tiny_checkpoint, converted_cache):
    """deploy/worker.py starts the prestart before BentoML's imports. BentoML's server logging
    config, applied next, disables the loggers that exist by then unless told not to: ours
    would drop every line for the life of the process. The service's import then takes the
    early prestart over instead of starting a second."""
    code = (
        "import json, logging, sys\n"
        "from deploy import worker\n"
        "worker.start_early()\n"
        "from runners import prestart\n"
        "started = list(prestart._STARTED)\n"
        "imported = sorted(m for m in ('torch', 'segment_anything', '_bentoml_impl.worker.service') if m in sys.modules)\n"
        "from bentoml._internal.log import configure_server_logging\n"
        "configure_server_logging()  # as BentoML's worker does before it imports the service\n"
        "seen = []\n"
        "class Catch(logging.Handler):\n"
        "    def emit(self, record): seen.append(record.getMessage())\n"
        "logging.getLogger().addHandler(Catch())\n"
        "import bentoml\n"
        "bentoml.server_context.worker_index = 1\n"
        "import service\n"
        "started[0].compiled.result(timeout=300)\n"
        "logging.getLogger('runners.converted').info('logged after the logging config')\n"
        "taken = prestart.take_prestart(service.SETTINGS)\n"
        "print(json.dumps({'started': len(started), 'imported': imported, 'taken_is_started': taken is started[0],\n"
        "                  'shown': [line for line in seen if line.startswith(('logged after', 'compiling'))]}))\n"
    )
    report = fresh_interpreter(code, tiny_checkpoint, converted_cache)
    assert report["started"] == 1 and report["imported"] == [] and report["taken_is_started"]
    assert report["shown"][0] == "logged after the logging config"
    assert report["shown"][1].startswith("compiling the OpenVINO encoder and decoder (started ")


def test_an_early_start_logs_only_once_the_service_is_constructed():
    """BentoML keeps the worker's name from the first line it formats, so lines of the
    prestart thread are held until the service's constructor releases them, in order."""
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    catch = Catch(logging.INFO)
    logging.getLogger().addHandler(catch)
    try:
        use_info_level()
        hold()
        logging.getLogger("runners.converted").info("one")
        logging.getLogger("deploy.entrypoint").warning("two")
        assert seen == []
        release()
        assert seen == ["one", "two"]
        logging.getLogger("runners.pipeline").info("three")
        assert seen == ["one", "two", "three"]
    finally:
        release()
        logging.getLogger().removeHandler(catch)


def test_load_uses_the_prestarted_encoder(monkeypatch, no_nvidia_driver, tiny_checkpoint, converted_cache,
                                          reference_model):
    settings = tiny_settings(tiny_checkpoint, converted_cache)
    early = prestart(settings)
    assert early is not None
    compiled = early.compiled.result(timeout=120)

    def compile_again(*args, **kwargs):
        raise AssertionError("loading compiled the encoder a second time")

    monkeypatch.setattr(prestart_module, "compile_for", compile_again)
    pipeline = Pipeline(settings)
    pipeline.load(early)
    engine = pipeline.engine
    assert isinstance(engine, ConvertedEngine) and engine.encoder is compiled.encoder
    assert engine.prompt_decoder is compiled.prompts.prompt_decoder and compiled.decoder is None
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = reference_model.image_encoder(x)
    assert (torch.from_numpy(engine.encode(x.numpy())) - reference).abs().max() <= 1e-4 * reference.abs().max()


def test_a_folder_without_a_prompt_decoder_is_served_by_the_torch_engine(no_nvidia_driver, tiny_checkpoint,
                                                                         converted_cache, tmp_path):
    """An encoder converted by an older release (SEGANY_OPENVINO_DIR) has no prompt decoder: the
    torch engine serves it, with the converted mask decoder, and its masks are the torch-free
    engine's (both are SamPredictor's)."""
    import numpy as np

    from runners.decoders import OpenVINOMaskDecoder
    from runners.engine_types import Prompts
    from runners.sam import SamEngine

    older = baked_folder(converted_cache, tiny_checkpoint, tmp_path / "older", without="prompt_decoder")
    pipelines = {}
    for name, settings in [("older", tiny_settings(tiny_checkpoint, tmp_path / "cache", openvino_dir=older)),
                           ("current", tiny_settings(tiny_checkpoint, converted_cache))]:
        pipelines[name] = Pipeline(settings)
        pipelines[name].load()
    older_engine, current_engine = pipelines["older"].engine, pipelines["current"].engine
    assert isinstance(older_engine, SamEngine) and isinstance(older_engine.model.mask_decoder.predict_masks, OpenVINOMaskDecoder)
    assert isinstance(current_engine, ConvertedEngine)
    rgb = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    prompts = Prompts(points=np.array([[200.0, 150.0]]), labels=np.array([1]), multimask=True)
    older_masks = older_engine.predict(older_engine.embed([older_engine.prepare(rgb)])[0], prompts).masks
    current_masks = current_engine.predict(current_engine.embed([current_engine.prepare(rgb)])[0], prompts).masks
    assert older_masks.shape == current_masks.shape == (1, 3, 300, 400)
    assert (older_masks != current_masks).mean() < 1e-4 and 0.01 < current_masks.mean() < 0.99


def test_a_failed_prestart_fails_loading_with_the_same_error(no_nvidia_driver, tmp_path):
    settings = tiny_settings(tmp_path / "missing.pth", tmp_path / "cache")
    with pytest.raises(CheckpointError) as in_order:
        Pipeline(settings).load()
    early = prestart(settings)
    assert early is not None
    with pytest.raises(CheckpointError) as prestarted:
        Pipeline(settings).load(early)
    assert prestarted.value.message == in_order.value.message and "no such file" in prestarted.value.message


def test_a_baked_encoder_is_compiled_without_writing_a_blob(tiny_checkpoint, converted_cache, tmp_path):
    """SEGANY_OPENVINO_DIR (an image's encoder, converted at build time): by default no
    compiled blob is written to the instance's fresh disk; SEGANY_COMPILED_CACHE=on writes one."""
    from runners.checkpoints import ResolvedCheckpoint

    baked = next((converted_cache / "openvino").iterdir())
    checkpoint = ResolvedCheckpoint(tiny_checkpoint, str(tiny_checkpoint), None)
    fresh = tmp_path / "fresh"
    settings = tiny_settings(tiny_checkpoint, fresh, openvino_dir=baked)
    assert compile_for(settings, checkpoint, "tiny", "fp32").encoder.inputs
    assert not list(fresh.rglob("*.blob"))
    compile_for(dataclasses.replace(settings, compiled_cache="on"), checkpoint, "tiny", "fp32")
    assert list((fresh / "openvino-compiled").rglob("*.blob"))


def test_segany_decoder_torch_keeps_segment_anythings_decoder(no_nvidia_driver, tiny_checkpoint, converted_cache):
    from runners.decoders import OpenVINOMaskDecoder

    settings = dataclasses.replace(tiny_settings(tiny_checkpoint, converted_cache), decoder="torch")
    pipeline = Pipeline(settings)
    pipeline.load()
    assert pipeline.engine is not None and pipeline.engine.encoder.name == "openvino"
    assert not isinstance(pipeline.engine.model.mask_decoder.predict_masks, OpenVINOMaskDecoder)
    assert Settings.from_env({"SEGANY_DECODER": "torch"}).decoder == "torch"
    with pytest.raises(ConfigError, match="SEGANY_DECODER"):
        Settings.from_env({"SEGANY_DECODER": "openvino"})
