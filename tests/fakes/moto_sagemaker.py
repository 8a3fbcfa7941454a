"""An extension of moto's SageMaker backend for what ``segany deploy aws`` calls and moto lacks.

moto (5.2.x) answers CreateModel / CreateEndpointConfig / CreateEndpoint / DescribeEndpoint but
has no UpdateEndpoint, no inference components, puts every endpoint InService at once, drops
fields that AWS keeps (ExecutionRoleArn, ManagedInstanceScaling, RoutingConfig, AsyncInferenceConfig
on the endpoint...), refuses current instance types (ml.g5.*, ml.g6.*, ml.c7i.* ...) and accepts
values that AWS rejects. This module patches moto's classes in place, once (:func:`install`):

* **UpdateEndpoint**: Updating (the OLD config still shown) for :attr:`Settings.update_describes`
  DescribeEndpoint calls, then InService on the new config; :func:`fail_next_update` makes the next
  update fail the way AWS documents it (back to InService on the old config, FailureReason set);
* **CreateEndpoint**: Creating for :attr:`Settings.create_describes` describes, then InService, or
  Failed with FailureReason after :func:`fail_next_create`; DeleteEndpoint refuses in-progress
  endpoints and endpoints that still carry inference components;
* **endpoint fields** kept as AWS returns them (see :func:`variant_summaries`);
* **request validation** from the API model (:mod:`tests.fakes.moto_validation`);
* **inference components** (:mod:`tests.fakes.moto_inference_components`) and Application Auto
  Scaling of their copy count (:mod:`tests.fakes.moto_autoscaling`).

Everything is written from the SageMaker API reference (each rule cites its page); wordings that
no page gives are marked "assumed". State that moto has no place for lives in a module-level
store keyed by (account, region), emptied by :func:`reset` and by moto's ``/moto-api/reset``.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.fakes.moto_validation import check_variants, validate_instance_type, validate_request, validation_error

__all__ = [
    "Settings", "settings", "install", "reset", "fail_next_create", "fail_next_update",
    "fail_next_component", "validate_request",
]


@dataclass
class Settings:
    """How many DescribeX calls still show a transition before it completes (0: the next one)."""

    create_describes: int = 1  # CreateEndpoint: Creating -> InService / Failed
    update_describes: int = 1  # UpdateEndpoint: Updating -> InService
    component_describes: int = 1  # inference components: Creating / Updating -> InService


settings = Settings()


@dataclass
class PendingOp:
    """A CreateEndpoint / UpdateEndpoint in progress (see :func:`advance_endpoint`)."""

    kind: str  # "create" | "update"
    remaining: int
    failure: str | None = None
    new_config: str | None = None
    deployment_config: dict | None = None
    retain_deployment_config: bool = False
    retain_variant_properties: bool = False
    excluded_properties: set = field(default_factory=set)


@dataclass
class RegionState:
    pending: dict = field(default_factory=dict)  # endpoint name -> PendingOp
    components: dict = field(default_factory=dict)  # inference component name -> InferenceComponent


LOCK = threading.RLock()
_STATE: dict[tuple[str, str], RegionState] = {}
_FAIL_CREATE: dict[str, str] = {}
_FAIL_UPDATE: dict[str, str] = {}
_FAIL_COMPONENT: dict[str, str] = {}
_installed = False


def state_for(backend: Any) -> RegionState:
    with LOCK:
        return _STATE.setdefault((backend.account_id, backend.region_name), RegionState())


def fail_next_create(endpoint_name: str, reason: str) -> None:
    """The next CreateEndpoint of ``endpoint_name`` ends Failed with ``reason`` (a health check failing)."""
    with LOCK:
        _FAIL_CREATE[endpoint_name] = reason


def fail_next_update(endpoint_name: str, reason: str) -> None:
    """The next UpdateEndpoint of ``endpoint_name`` fails: InService again on the old config, FailureReason set."""
    with LOCK:
        _FAIL_UPDATE[endpoint_name] = reason


def fail_next_component(component_name: str, reason: str) -> None:
    """The next create (-> Failed) or update (-> rolled back, InService) of an inference component fails."""
    with LOCK:
        _FAIL_COMPONENT[component_name] = reason


def take_failure(table: str, name: str) -> str | None:
    with LOCK:
        return {"create": _FAIL_CREATE, "update": _FAIL_UPDATE, "component": _FAIL_COMPONENT}[table].pop(name, None)


def reset() -> None:
    """Forget the extension's state and fault injections, and restore the default :data:`settings`."""
    with LOCK:
        _STATE.clear()
        _FAIL_CREATE.clear()
        _FAIL_UPDATE.clear()
        _FAIL_COMPONENT.clear()
        for f in dataclasses.fields(Settings):
            setattr(settings, f.name, f.default)


# --- endpoints ----------------------------------------------------------------------------------


def arn(backend: Any, kind: str, name: str) -> str:
    from moto.sagemaker.utils import arn_formatter

    return arn_formatter(kind, name, backend.account_id, backend.region_name)


def variant_summaries(variants: list[dict]) -> list[dict]:
    """DescribeEndpoint's ProductionVariants (API_ProductionVariantSummary) from a config's variants."""
    summaries = []
    for variant in variants:
        summary: dict[str, Any] = {"VariantName": variant["VariantName"]}
        if variant.get("ServerlessConfig"):
            summary["CurrentServerlessConfig"] = copy.deepcopy(variant["ServerlessConfig"])
            summary["DesiredServerlessConfig"] = copy.deepcopy(variant["ServerlessConfig"])
        elif variant.get("InitialInstanceCount") is not None:
            summary["CurrentInstanceCount"] = summary["DesiredInstanceCount"] = variant["InitialInstanceCount"]
        # API_ProductionVariant InitialVariantWeight: "If unspecified, it defaults to 1.0."
        weight = float(variant.get("InitialVariantWeight", 1.0))
        summary["CurrentWeight"] = summary["DesiredWeight"] = weight
        for key in ("ManagedInstanceScaling", "RoutingConfig"):
            if key in variant:
                summary[key] = copy.deepcopy(variant[key])
        summaries.append(summary)
    return summaries


def _pending_summary(config: Any, started: Any) -> dict:
    # API_PendingDeploymentSummary: the config being deployed while the endpoint is Updating.
    variants = []
    for variant in config.production_variants:
        item = {"VariantName": variant["VariantName"],
                "DesiredWeight": float(variant.get("InitialVariantWeight", 1.0))}
        for key, out in (("InitialInstanceCount", "DesiredInstanceCount"), ("InstanceType", "InstanceType"),
                         ("ServerlessConfig", "DesiredServerlessConfig"),
                         ("ManagedInstanceScaling", "ManagedInstanceScaling"), ("RoutingConfig", "RoutingConfig")):
            if key in variant:
                item[out] = copy.deepcopy(variant[key])
        variants.append(item)
    return {"EndpointConfigName": config.endpoint_config_name, "ProductionVariants": variants, "StartTime": started}


def _not_found_endpoint(backend: Any, name: str) -> Exception:
    return validation_error(f'Could not find endpoint "{arn(backend, "endpoint", name)}".')


def advance_endpoint(backend: Any, name: str) -> None:
    """One DescribeEndpoint's worth of progress on ``name``'s pending create / update."""
    from moto.core.utils import utcnow

    pending: PendingOp | None = state_for(backend).pending.get(name)
    endpoint = backend.endpoints.get(name)
    if pending is None or endpoint is None:
        return
    if pending.remaining > 0:
        pending.remaining -= 1
        return
    del state_for(backend).pending[name]
    endpoint.last_modified_time = utcnow()
    endpoint.pending_deployment_summary = None
    if pending.kind == "create":
        # API_DescribeEndpoint EndpointStatus: "Failed: Endpoint could not be created, updated,
        # or re-scaled. Use the FailureReason value returned by DescribeEndpoint ...".
        endpoint.endpoint_status = "Failed" if pending.failure else "InService"
        endpoint.failure_reason = pending.failure
        return
    endpoint.endpoint_status = "InService"
    if pending.failure:
        # API_EndpointMetadata FailureReason: "If the status of the endpoint is Failed, or the
        # status is InService but update operation fails, this provides the reason why it failed."
        # The endpoint keeps serving on its old EndpointConfig (blue/green rollback,
        # API_UpdateEndpoint: the old fleet is only deleted once the new one is up).
        endpoint.failure_reason = pending.failure
        return
    config = backend.endpoint_configs.get(pending.new_config)
    old = {v["VariantName"]: v for v in endpoint.production_variants}
    new = variant_summaries(config.production_variants if config else [])
    if pending.retain_variant_properties:
        # API_UpdateEndpoint RetainAllVariantProperties / ExcludeRetainedVariantProperties:
        # keep the live instance count and weight unless the property is excluded.
        for variant in new:
            before = old.get(variant["VariantName"], {})
            for prop, keys in (("DesiredInstanceCount", ("CurrentInstanceCount", "DesiredInstanceCount")),
                               ("DesiredWeight", ("CurrentWeight", "DesiredWeight"))):
                if prop not in pending.excluded_properties:
                    variant.update({k: before[k] for k in keys if k in before})
    endpoint.production_variants = new
    endpoint.endpoint_config_name = pending.new_config
    endpoint.failure_reason = None
    if config is not None:
        endpoint.async_inference_config = config.async_inference_config
        endpoint.data_capture_config = config.data_capture_config
    # API_UpdateEndpoint RetainDeploymentConfig: "Specifies whether to reuse the last deployment
    # configuration"; DescribeEndpoint LastDeploymentConfig: "The most recent deployment configuration".
    if pending.deployment_config is not None or not pending.retain_deployment_config:
        endpoint.last_deployment_config = pending.deployment_config


def _describe_endpoint(self: Any) -> Any:
    from moto.core.responses import ActionResult

    name = self._get_param("EndpointName")
    backend = self.sagemaker_backend
    with LOCK:
        advance_endpoint(backend, name)
        if name not in backend.endpoints:
            raise _not_found_endpoint(backend, name)
        return ActionResult(backend.describe_endpoint(name))


def _update_endpoint(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow

    params = self._get_params()
    validate_request("UpdateEndpoint", params)
    backend = self.sagemaker_backend
    name, config_name = params["EndpointName"], params["EndpointConfigName"]
    with LOCK:
        endpoint = backend.endpoints.get(name)
        if endpoint is None:  # API_UpdateEndpoint errors: ValidationException (wording as AWS sends it)
            raise _not_found_endpoint(backend, name)
        if endpoint.endpoint_status == "Failed":
            # API_EndpointSummary: "DeleteEndpoint is the only operation that can be performed on
            # a failed endpoint." (wording assumed)
            raise validation_error(
                f'Cannot update failed endpoint "{endpoint.arn}". Delete it and create it again.')
        if endpoint.endpoint_status != "InService":
            # API_UpdateEndpoint: SageMaker sets the endpoint Updating until the update is done;
            # AWS refuses another change meanwhile with this message.
            raise validation_error(f'Cannot update in-progress endpoint "{endpoint.arn}".')
        config = backend.endpoint_configs.get(config_name)
        if config is None:
            missing = arn(backend, "endpoint-config", config_name)
            raise validation_error(f'Could not find endpoint configuration "{missing}".')
        excluded = {p["VariantPropertyType"] for p in params.get("ExcludeRetainedVariantProperties") or []}
        state_for(backend).pending[name] = PendingOp(
            kind="update", remaining=max(0, settings.update_describes), failure=take_failure("update", name),
            new_config=config_name, deployment_config=params.get("DeploymentConfig"),
            retain_deployment_config=bool(params.get("RetainDeploymentConfig")),
            retain_variant_properties=bool(params.get("RetainAllVariantProperties")), excluded_properties=excluded)
        # API_UpdateEndpoint: "When SageMaker receives the request, it sets the endpoint status to
        # Updating. After updating the endpoint, it sets the status to InService."
        endpoint.endpoint_status = "Updating"
        endpoint.failure_reason = None
        endpoint.last_modified_time = utcnow()
        endpoint.pending_deployment_summary = _pending_summary(config, endpoint.last_modified_time)
        return ActionResult({"EndpointArn": endpoint.arn})


def _create_endpoint(original: Callable) -> Callable:
    def create_endpoint(self: Any) -> Any:
        params = self._get_params()
        validate_request("CreateEndpoint", params)
        backend, name = self.sagemaker_backend, params["EndpointName"]
        with LOCK:
            if name in backend.endpoints:
                # API_CreateEndpoint: "The endpoint name must be unique within an Amazon Web
                # Services Region in your Amazon Web Services account."
                existing = arn(backend, "endpoint", name)
                raise validation_error(f'Cannot create already existing endpoint "{existing}".')
            result = original(self)
            endpoint = backend.endpoints[name]
            config = backend.endpoint_configs[params["EndpointConfigName"]]
            endpoint.async_inference_config = config.async_inference_config
            failure = take_failure("create", name)
            if failure or settings.create_describes > 0:
                # API_DescribeEndpoint EndpointStatus: "Creating: CreateEndpoint is executing."
                endpoint.endpoint_status = "Creating"
                state_for(backend).pending[name] = PendingOp("create", settings.create_describes, failure)
            return result

    return create_endpoint


def _delete_endpoint(original: Callable) -> Callable:
    def delete_endpoint(self: Any) -> Any:
        backend, name = self.sagemaker_backend, self._get_param("EndpointName")
        with LOCK:
            endpoint = backend.endpoints.get(name)
            if endpoint is None:
                raise _not_found_endpoint(backend, name)
            if endpoint.endpoint_status in ("Creating", "Updating"):
                # The message AWS gives for DeleteEndpoint while the endpoint is in progress.
                raise validation_error(f'Cannot update in-progress endpoint "{endpoint.arn}".')
            attached = sorted(c.name for c in state_for(backend).components.values() if c.endpoint_name == name)
            if attached:
                # Developer Guide, realtime-endpoints-delete-resources: "Delete inference components
                # first" (the console does it for you; the API refuses). Wording assumed.
                raise validation_error(f'Endpoint "{endpoint.arn}" still has inference components '
                                       f'({", ".join(attached)}). Delete them before deleting the endpoint.')
            state_for(backend).pending.pop(name, None)
            return original(self)

    return delete_endpoint


_CONFIG_EXTRAS = ("ExecutionRoleArn", "VpcConfig", "EnableNetworkIsolation", "ExplainerConfig",
                  "ShadowProductionVariants")


def _create_endpoint_config(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.core.utils import camelcase_to_underscores

    params = self._get_params()
    validate_request("CreateEndpointConfig", params)
    check_variants(params.get("ProductionVariants") or [])
    backend, name = self.sagemaker_backend, params["EndpointConfigName"]
    if name in backend.endpoint_configs:  # wording as AWS sends it
        existing = arn(backend, "endpoint-config", name)
        raise validation_error(f'Cannot create already existing endpoint configuration "{existing}".')
    config = backend.create_endpoint_config(
        endpoint_config_name=name, production_variants=params["ProductionVariants"],
        data_capture_config=params.get("DataCaptureConfig"), tags=params.get("Tags"), kms_key_id=params.get("KmsKeyId"),
        async_inference_config=params.get("AsyncInferenceConfig"))
    # API_DescribeEndpointConfig returns these as they were sent; moto drops them.
    for key in _CONFIG_EXTRAS:
        if key in params:
            setattr(config, camelcase_to_underscores(key), params[key])
    return ActionResult({"EndpointConfigArn": config.endpoint_config_arn})


def _create_model(original: Callable) -> Callable:
    def create_model(self: Any) -> Any:
        params = self._get_params()
        validate_request("CreateModel", params)
        backend, name = self.sagemaker_backend, params["ModelName"]
        if name in backend._models:  # wording as AWS sends it
            raise validation_error(f'Cannot create already existing model "{arn(backend, "model", name)}".')
        return original(self)

    return create_model


def _validate_models(self: Any, production_variants: list[dict]) -> None:
    # API_ProductionVariant ModelName is optional: inference-component endpoints have none.
    for variant in production_variants:
        name = variant.get("ModelName")
        if name is not None and name not in self._models:
            raise validation_error(f"Could not find model '{arn(self, 'model', name)}'.")


NO_CAPACITY = ("Inference Component has no capacity to process this request. ApplicationAutoScaling may be "
               "in-progress (if configured) or try to increase the capacity by invoking "
               "UpdateInferenceComponentRuntimeConfig API.")


def _runtime_invoke() -> None:
    """InvokeEndpoint as SageMaker answers it where moto does not:

    - its Body is a blob, an image as often as JSON (API_runtime_InvokeEndpoint); moto decodes
      every request body as UTF-8 and answers a JPEG with a 500: keep the bytes and hand moto's
      handler a lossless text form of them;
    - ``InferenceComponentName`` names a component, which must exist; one with no copy (scaled to
      zero, endpoint-auto-scaling-zero-instances.html: "any attempts to invoke the endpoint will
      produce an error") is refused with a ValidationError until a copy is in service.
    """
    from moto.sagemaker.models import sagemaker_backends
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    from tests.fakes.moto_inference_components import _find

    original = SageMakerRuntimeResponse.invoke_endpoint
    SageMakerRuntimeResponse.use_raw_body = True

    def invoke_endpoint(self: Any) -> Any:
        if isinstance(self.body, bytes):
            self.body = self.body.decode("latin-1")
        name = self.headers.get("X-Amzn-SageMaker-Inference-Component")
        if name:
            component = _find(sagemaker_backends[self.current_account][self.region], name)
            if not component.current:
                raise validation_error(NO_CAPACITY)
        return original(self)

    SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint


def install() -> None:
    """Patch moto's SageMaker and Application Auto Scaling classes (idempotent)."""
    global _installed
    with LOCK:
        if _installed:
            return
        from moto.moto_api._internal.models import MotoAPIBackend
        from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        from tests.fakes import moto_autoscaling, moto_inference_components

        if not getattr(SageMakerResponse, "_segany_extension", False):
            SageMakerResponse._segany_extension = True
            SageMakerResponse.describe_endpoint = _describe_endpoint
            SageMakerResponse.update_endpoint = _update_endpoint
            SageMakerResponse.create_endpoint = _create_endpoint(SageMakerResponse.create_endpoint)
            SageMakerResponse.delete_endpoint = _delete_endpoint(SageMakerResponse.delete_endpoint)
            SageMakerResponse.create_endpoint_config = _create_endpoint_config
            SageMakerResponse.create_model = _create_model(SageMakerResponse.create_model)
            SageMakerModelBackend.validate_production_variants = _validate_models
            FakeEndpointConfig.validate_instance_type = validate_instance_type
            FakeEndpoint._process_production_variants = lambda self, variants: variant_summaries(variants)
            moto_inference_components.install(SageMakerResponse, SageMakerModelBackend)
            moto_autoscaling.install()
            _runtime_invoke()
            original_reset = MotoAPIBackend.reset

            def moto_api_reset(self: Any) -> None:  # /moto-api/reset empties our store too
                original_reset(self)
                reset()

            MotoAPIBackend.reset = moto_api_reset
        _installed = True
