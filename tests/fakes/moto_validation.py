"""Request validation for the moto SageMaker extension, from the API model.

moto checks almost nothing that the SageMaker API reference lists under each request member
("Length Constraints", "Valid Range", "Pattern", "Valid Values"), and botocore's client checks only
minima. :func:`validate_request` checks them all against botocore's copy of the API model and
answers as AWS does: ValidationException, "1 validation error detected: Value 'x' at
'productionVariants.1.member.instanceType' failed to satisfy constraint: ...". :func:`check_variants`
adds the rules the model cannot express (API_ProductionVariantServerlessConfig), and
:func:`validate_instance_type` replaces moto's hand-written instance-type list with the model's enum.
"""

from __future__ import annotations

import functools
import re
from typing import Any


def validation_error(message: str) -> Exception:
    from moto.sagemaker.exceptions import ValidationError

    return ValidationError(message=message)


@functools.lru_cache(maxsize=None)
def _model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@functools.lru_cache(maxsize=None)
def _regex(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:  # Java-only syntax such as \p{L}: not checked
        return None


def _check(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    # The constraints of each member are those the API reference lists under it ("Length
    # Constraints", "Valid Range", "Pattern", "Valid Values"); botocore's client checks only minima.
    kind, meta = shape.type_name, shape.metadata
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _check(member, value[name], f"{path}.{name[0].lower()}{name[1:]}".lstrip("."), errors)
        return
    if kind == "list" and isinstance(value, list):
        for i, item in enumerate(value, 1):
            _check(shape.member, item, f"{path}.{i}.member", errors)
        return
    if kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            _check(shape.value, item, f"{path}.{key}", errors)
        return
    broken = None
    if kind == "string" and isinstance(value, str):
        pattern = meta.get("pattern")
        if shape.enum and value not in shape.enum:
            broken = f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
        elif "max" in meta and len(value) > meta["max"]:
            broken = f"Member must have length less than or equal to {meta['max']}"
        elif "min" in meta and len(value) < meta["min"]:
            broken = f"Member must have length greater than or equal to {meta['min']}"
        elif pattern and _regex(pattern) and not _regex(pattern).fullmatch(value):
            anchored = pattern if pattern.startswith("^") else "^" + pattern  # as the reference prints it
            broken = f"Member must satisfy regular expression pattern: {anchored}"
    elif kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "max" in meta and value > meta["max"]:
            broken = f"Member must have value less than or equal to {meta['max']}"
        elif "min" in meta and value < meta["min"]:
            broken = f"Member must have value greater than or equal to {meta['min']}"
    if broken:
        errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: {broken}")


def validate_request(operation: str, params: dict, service: str = "sagemaker") -> None:
    """Raise ValidationException as AWS words it when ``params`` break the operation's input shape."""
    errors: list[str] = []
    _check(_model(service).operation_model(operation).input_shape, params, "", errors)
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected"
        raise validation_error(f"{count}: {'; '.join(errors)}")


def check_variants(variants: list[dict]) -> None:
    """CreateEndpointConfig rules on ProductionVariants that the API model cannot express."""
    for variant in variants:
        serverless = variant.get("ServerlessConfig") or {}
        memory = serverless.get("MemorySizeInMB")
        # API_ProductionVariantServerlessConfig: "Valid values are in 1 GB increments: 1024 MB,
        # 2048 MB, 3072 MB, 4096 MB, 5120 MB, or 6144 MB." (moto's own wording for this one).
        if memory is not None and memory % 1024:
            sizes = [1024 * i for i in range(1, 7)]
            raise validation_error(f"Value '{memory}' at 'MemorySizeInMB' failed to satisfy constraint: "
                                   f"Member must satisfy enum value set: {sizes}")
        # API_ProductionVariantServerlessConfig: ProvisionedConcurrency "Should be less than or
        # equal to MaxConcurrency" (wording assumed).
        provisioned, most = serverless.get("ProvisionedConcurrency"), serverless.get("MaxConcurrency")
        if provisioned is not None and most is not None and provisioned > most:
            raise validation_error(f"ProvisionedConcurrency ({provisioned}) must be less than or equal to "
                                   f"MaxConcurrency ({most}) for production variant {variant['VariantName']}.")


def validate_instance_type(self: Any, instance_type: str) -> None:
    # API_ProductionVariant InstanceType "Valid Values": the API model's enum, which includes
    # ml.g5.*, ml.g6.*, ml.m6i.*, ml.c6i.*, ml.c7i.* that moto's hand-written list lacks.
    allowed = _model("sagemaker").shape_for("ProductionVariantInstanceType").enum
    if instance_type not in allowed:
        raise validation_error(f"Value '{instance_type}' at 'instanceType' failed to satisfy constraint: "
                               f"Member must satisfy enum value set: [{', '.join(allowed)}]")
