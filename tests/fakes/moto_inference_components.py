"""SageMaker inference components for moto, which has none (installed by ``moto_sagemaker.install``).

CreateInferenceComponent, DescribeInferenceComponent, UpdateInferenceComponent,
UpdateInferenceComponentRuntimeConfig, DeleteInferenceComponent and ListInferenceComponents,
written from the SageMaker API reference (https://docs.aws.amazon.com/sagemaker/latest/APIReference/,
one page per action, cited next to each rule), plus AddTags / ListTags / DeleteTags on a
component's ARN. Components live in ``moto_sagemaker``'s per-(account, region) store.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.fakes.moto_sagemaker import LOCK, arn, settings, state_for, take_failure
from tests.fakes.moto_validation import validate_request, validation_error


class InferenceComponent:
    def __init__(self, backend: Any, name: str, endpoint: Any, variant: str, params: dict) -> None:
        from moto.core.utils import utcnow

        self.name, self.arn = name, arn(backend, "inference-component", name)
        self.endpoint_name, self.endpoint_arn, self.variant_name = endpoint.endpoint_name, endpoint.arn, variant
        self.specification = copy.deepcopy(params.get("Specification"))
        self.specifications = copy.deepcopy(params.get("Specifications"))
        self.desired = (params.get("RuntimeConfig") or {}).get("CopyCount")
        self.current = 0
        self.tags = list(params.get("Tags") or [])
        self.creation_time = self.last_modified_time = utcnow()
        self.failure_reason: str | None = None
        self.last_deployment_config: dict | None = None
        # API_DescribeInferenceComponent InferenceComponentStatus: InService | Creating | Updating | Failed | Deleting
        self.status, self.remaining, self.failure = "Creating", max(0, settings.component_describes), None
        self.rollback: tuple | None = None

    def start(self, status: str, failure: str | None) -> None:
        from moto.core.utils import utcnow

        self.status, self.remaining, self.failure = status, max(0, settings.component_describes), failure
        self.failure_reason = None
        self.last_modified_time = utcnow()

    def advance(self) -> None:
        """One DescribeInferenceComponent's worth of progress."""
        from moto.core.utils import utcnow

        if self.status not in ("Creating", "Updating"):
            return
        if self.remaining > 0:
            self.remaining -= 1
            return
        self.last_modified_time = utcnow()
        if self.failure and self.status == "Creating":
            self.status, self.failure_reason, self.current = "Failed", self.failure, 0
        elif self.failure:  # a failed update rolls back to what was serving (assumed, like endpoints)
            self.specification, self.specifications, self.desired = self.rollback
            self.status, self.failure_reason, self.current = "InService", self.failure, self.desired or 0
        else:
            self.status, self.current = "InService", self.desired or 0
        self.failure = self.rollback = None

    def summary(self) -> dict:
        # API_InferenceComponentSummary
        return {"CreationTime": self.creation_time, "InferenceComponentArn": self.arn,
                "InferenceComponentName": self.name, "EndpointArn": self.endpoint_arn,
                "EndpointName": self.endpoint_name, "VariantName": self.variant_name,
                "InferenceComponentStatus": self.status, "LastModifiedTime": self.last_modified_time}

    def describe(self) -> dict:
        # API_DescribeInferenceComponent response elements
        out = self.summary()
        if self.specification is not None:
            out["Specification"] = _spec_summary(self.specification, self.creation_time)
        if self.specifications is not None:
            out["Specifications"] = [_spec_summary(s, self.creation_time) for s in self.specifications]
        if self.desired is not None:  # API_InferenceComponentRuntimeConfigSummary
            out["RuntimeConfig"] = {"DesiredCopyCount": self.desired, "CurrentCopyCount": self.current}
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        if self.last_deployment_config:
            out["LastDeploymentConfig"] = self.last_deployment_config
        return out


def _spec_summary(spec: dict, when: Any) -> dict:
    # API_InferenceComponentSpecificationSummary: the container comes back as
    # API_InferenceComponentContainerSpecificationSummary, whose image is a DeployedImage.
    out = copy.deepcopy(spec)
    container = out.pop("Container", None)
    if container is not None:
        image = container.pop("Image", None)
        if image is not None:
            container["DeployedImage"] = {"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": when}
        out["Container"] = container
    return out


def _find(backend: Any, name: str) -> InferenceComponent:
    component = state_for(backend).components.get(name)
    if component is None:
        # The message AWS sends (clients match on "Could not find inference component").
        raise validation_error(f'Could not find inference component "{arn(backend, "inference-component", name)}".')
    return component


def _check_models(backend: Any, specs: list[dict]) -> None:
    for spec in specs:  # API_InferenceComponentSpecification ModelName: "The name of an existing SageMaker AI model"
        name = spec.get("ModelName")
        if name is not None and name not in backend._models:
            raise validation_error(f"Could not find model '{arn(backend, 'model', name)}'.")


def _specs(params: dict) -> list[dict]:
    return ([params["Specification"]] if params.get("Specification") else []) + list(params.get("Specifications") or [])


def create_inference_component(self: Any) -> Any:
    from moto.core.responses import ActionResult

    params = self._get_params()
    validate_request("CreateInferenceComponent", params)
    backend, name = self.sagemaker_backend, params["InferenceComponentName"]
    with LOCK:
        if name in state_for(backend).components:  # names are unique per account and Region (wording assumed)
            existing = arn(backend, "inference-component", name)
            raise validation_error(f'Cannot create already existing inference component "{existing}".')
        # API_CreateInferenceComponent EndpointName: "The name of an existing endpoint where you host
        # the inference component."
        endpoint = backend.endpoints.get(params["EndpointName"])
        if endpoint is None:
            raise validation_error(f'Could not find endpoint "{arn(backend, "endpoint", params["EndpointName"])}".')
        config = backend.endpoint_configs.get(endpoint.endpoint_config_name)
        variants = {v["VariantName"]: v for v in (config.production_variants if config else [])}
        variant = params.get("VariantName")
        if variant is None and len(variants) == 1:
            variant = next(iter(variants))
        # API_CreateInferenceComponent VariantName: "The name of an existing production variant
        # where you host the inference component." (wording assumed)
        if variant not in variants:
            raise validation_error(f'Could not find variant "{variant}" in endpoint configuration '
                                   f'"{endpoint.endpoint_config_name}" of endpoint "{endpoint.arn}".')
        # Inference components go on variants that name no model (API_ProductionVariant ModelName
        # is optional for that reason); no reference page gives the error, so rule and wording are assumed.
        if variants[variant].get("ModelName"):
            raise validation_error(
                f'Production variant "{variant}" of endpoint "{endpoint.endpoint_name}" hosts model '
                f'"{variants[variant]["ModelName"]}"; inference components need a variant without a model.')
        if not _specs(params):
            raise validation_error("Specification must be provided.")  # wording assumed
        _check_models(backend, _specs(params))
        component = InferenceComponent(backend, name, endpoint, variant, params)
        component.failure = take_failure("component", name)
        state_for(backend).components[name] = component
        return ActionResult({"InferenceComponentArn": component.arn})


def describe_inference_component(self: Any) -> Any:
    from moto.core.responses import ActionResult

    with LOCK:
        component = _find(self.sagemaker_backend, self._get_param("InferenceComponentName"))
        component.advance()
        return ActionResult(component.describe())


def _begin_update(component: InferenceComponent) -> None:
    if component.status != "InService":
        # Like UpdateEndpoint, no change while one is in progress (wording assumed).
        raise validation_error(f'Cannot update in-progress inference component "{component.arn}".')
    component.rollback = (copy.deepcopy(component.specification), copy.deepcopy(component.specifications),
                          component.desired)
    component.start("Updating", take_failure("component", component.name))


def update_inference_component(self: Any) -> Any:
    from moto.core.responses import ActionResult

    params = self._get_params()
    validate_request("UpdateInferenceComponent", params)
    backend = self.sagemaker_backend
    with LOCK:
        component = _find(backend, params["InferenceComponentName"])
        # API_UpdateInferenceComponent: Specification and/or RuntimeConfig to change (wording assumed).
        if not _specs(params) and not params.get("RuntimeConfig"):
            raise validation_error("At least one of Specification, Specifications or RuntimeConfig must be provided.")
        _check_models(backend, _specs(params))
        _begin_update(component)
        if params.get("Specification"):
            component.specification = copy.deepcopy(params["Specification"])
        if params.get("Specifications"):
            component.specifications = copy.deepcopy(params["Specifications"])
        if params.get("RuntimeConfig"):
            component.desired = params["RuntimeConfig"]["CopyCount"]
        if params.get("DeploymentConfig"):  # DescribeInferenceComponent LastDeploymentConfig
            component.last_deployment_config = copy.deepcopy(params["DeploymentConfig"])
        return ActionResult({"InferenceComponentArn": component.arn})


def update_inference_component_runtime_config(self: Any) -> Any:
    from moto.core.responses import ActionResult

    params = self._get_params()
    validate_request("UpdateInferenceComponentRuntimeConfig", params)
    with LOCK:
        component = _find(self.sagemaker_backend, params["InferenceComponentName"])
        _begin_update(component)
        # API_InferenceComponentRuntimeConfigSummary: DesiredCopyCount moves now, CurrentCopyCount
        # follows once the copies are up.
        component.desired = params["DesiredRuntimeConfig"]["CopyCount"]
        return ActionResult({"InferenceComponentArn": component.arn})


def delete_inference_component(self: Any) -> Any:
    from moto.core.responses import EmptyResult

    backend = self.sagemaker_backend
    with LOCK:
        component = _find(backend, self._get_param("InferenceComponentName"))
        # API_DeleteInferenceComponent. AWS passes through Deleting first; here it is gone at once,
        # so the next Describe answers "Could not find inference component".
        del state_for(backend).components[component.name]
        return EmptyResult()


def list_inference_components(self: Any) -> Any:
    from moto.core.responses import ActionResult

    p = self._get_params()
    with LOCK:
        found = list(state_for(self.sagemaker_backend).components.values())
    # API_ListInferenceComponents request parameters (filters, SortBy default CreationTime,
    # SortOrder default Descending, NextToken / MaxResults).
    checks = [("NameContains", lambda c, v: v.lower() in c.name.lower()),
              ("EndpointNameEquals", lambda c, v: c.endpoint_name == v),
              ("VariantNameEquals", lambda c, v: c.variant_name == v),
              ("StatusEquals", lambda c, v: c.status == v),
              ("CreationTimeBefore", lambda c, v: c.creation_time < v),
              ("CreationTimeAfter", lambda c, v: c.creation_time > v),
              ("LastModifiedTimeBefore", lambda c, v: c.last_modified_time < v),
              ("LastModifiedTimeAfter", lambda c, v: c.last_modified_time > v)]
    for key, keep in checks:
        if p.get(key) is not None:
            found = [c for c in found if keep(c, p[key])]
    sort = {"Name": lambda c: c.name, "Status": lambda c: c.status}.get(p.get("SortBy"), lambda c: c.creation_time)
    found.sort(key=sort, reverse=p.get("SortOrder", "Descending") == "Descending")
    start, size = int(p.get("NextToken") or 0), int(p.get("MaxResults") or 10)
    page = found[start:start + size]
    result: dict[str, Any] = {"InferenceComponents": [c.summary() for c in page]}
    if start + size < len(found):
        result["NextToken"] = str(start + size)
    return ActionResult(result)


def install(response_class: Any, backend_class: Any) -> None:
    for function in (create_inference_component, describe_inference_component, update_inference_component,
                     update_inference_component_runtime_config, delete_inference_component, list_inference_components):
        setattr(response_class, function.__name__, function)
    original = backend_class._get_resource_from_arn

    def get_resource_from_arn(self: Any, resource_arn: str) -> Any:
        # moto's AddTags / ListTags / DeleteTags look the ARN's "type/name" up in a fixed table that
        # has no inference components (API_AddTags: any SageMaker resource ARN).
        kind, _, name = resource_arn.split(":")[-1].partition("/")
        if kind == "inference-component":
            with LOCK:
                return _find(self, name)
        return original(self, resource_arn)

    backend_class._get_resource_from_arn = get_resource_from_arn
