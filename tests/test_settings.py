from pathlib import Path

import pytest

from runners.errors import ConfigError
from runners.settings import Settings


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.model_type is None  # read off the checkpoint; vit_h when downloading
    assert settings.checkpoint is None
    assert settings.url_schemes == ("https", "s3", "gs")
    assert settings.url_allow_hosts == ()
    assert settings.sagemaker_model_dir == Path("/opt/ml/model")
    assert settings.max_body_bytes == 32 * 1024 * 1024


def test_every_variable_is_read():
    env = {
        "SEGANY_MODEL": "TINY",
        "SEGANY_CHECKPOINT": "s3://bucket/sam.pth",
        "SEGANY_CHECKPOINT_SHA256": "A" * 64,
        "SEGANY_CACHE_DIR": "/tmp/x",
        "SM_MODEL_DIR": "/models",
        "SEGANY_DEVICE": "cpu",
        "SEGANY_PRECISION": "bf16",
        "SEGANY_CACHE_MB": "12.5",
        "SEGANY_MAX_BATCH_SIZE": "8",
        "SEGANY_MAX_LATENCY_MS": "1000",
        "SEGANY_MAX_BODY_MB": "2",
        "SEGANY_MAX_IMAGE_PIXELS": "100",
        "SEGANY_MAX_IMAGE_SIDE": "50",
        "SEGANY_MAX_POINTS": "3",
        "SEGANY_MAX_BOXES": "2",
        "SEGANY_URL_SCHEMES": "https, http",
        "SEGANY_URL_ALLOW_HOSTS": "127.0.0.1,Example.com",
        "SEGANY_URL_TIMEOUT_S": "0.5",
        "SEGANY_WARMUP": "off",
        "SEGANY_COMPILED_CACHE": "Off",
    }
    s = Settings.from_env(env)
    assert (s.model_type, s.checkpoint, s.checkpoint_sha256) == ("tiny", "s3://bucket/sam.pth", "a" * 64)
    assert (s.cache_dir, s.sagemaker_model_dir, s.device, s.precision) == (Path("/tmp/x"), Path("/models"), "cpu", "bf16")
    assert s.embedding_cache_bytes == int(12.5 * 2**20)
    assert (s.max_batch_size, s.max_latency_ms, s.max_body_bytes) == (8, 1000, 2 * 2**20)
    assert (s.max_image_pixels, s.max_image_side, s.max_points, s.max_boxes) == (100, 50, 3, 2)
    assert s.url_schemes == ("https", "http")
    assert s.url_allow_hosts == ("127.0.0.1", "example.com")
    assert (s.url_timeout_s, s.warmup) == (0.5, "off")
    assert (s.compiled_cache, s.keeps_compiled_encoder) == ("off", False)


@pytest.mark.parametrize("value, openvino_dir, keeps", [
    ("auto", None, True),  # converted into the cache on this disk: keep the blob beside it
    ("auto", "/opt/segany/openvino", False),  # a baked image: every instance starts on a fresh disk
    ("on", "/opt/segany/openvino", True),
    ("off", None, False),
])
def test_compiled_encoder_cache(value, openvino_dir, keeps):
    env = {"SEGANY_COMPILED_CACHE": value, **({"SEGANY_OPENVINO_DIR": openvino_dir} if openvino_dir else {})}
    assert Settings.from_env(env).keeps_compiled_encoder is keeps


@pytest.mark.parametrize(
    "env, names",
    [
        ({"SEGANY_MODEL": "vit_x"}, ["SEGANY_MODEL", "vit_h"]),
        ({"SEGANY_MAX_BATCH_SIZE": "four"}, ["SEGANY_MAX_BATCH_SIZE", "not a int"]),
        ({"SEGANY_MAX_BATCH_SIZE": "0"}, ["SEGANY_MAX_BATCH_SIZE", "at least 1"]),
        ({"SEGANY_BATCH_STACKING": "maybe"}, ["SEGANY_BATCH_STACKING", "sequential"]),
        ({"SEGANY_CHECKPOINT_SHA256": "abc"}, ["SEGANY_CHECKPOINT_SHA256", "64 hex"]),
        ({"SEGANY_URL_SCHEMES": "https,ftp"}, ["SEGANY_URL_SCHEMES", "ftp"]),
        ({"SEGANY_WARMUP": "maybe"}, ["SEGANY_WARMUP", "decoder"]),
        ({"SEGANY_ENCODER": "tensorrt"}, ["SEGANY_ENCODER", "openvino"]),
        ({"SEGANY_PRECISION": "int4"}, ["SEGANY_PRECISION"]),
        ({"SEGANY_COMPILED_CACHE": "maybe"}, ["SEGANY_COMPILED_CACHE", "auto"]),
    ],
)
def test_bad_values_name_the_variable_and_the_fix(env, names):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    for name in names:
        assert name in caught.value.message


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings.from_env({}).model_type = "tiny"  # type: ignore[misc]
