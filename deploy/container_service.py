"""The service as the image serves it: ``service.py`` unchanged, plus the contract of the
platform the entrypoint chose (``SEGANY_PLATFORM``)."""

from __future__ import annotations

import os

from deploy.entrypoint import ContainerConfig
from deploy.limits import sagemaker_mode
from service import SegmentAnything

__all__ = ["SegmentAnything"]

CONFIG = ContainerConfig.from_env(os.environ.get("SEGANY_PLATFORM", "cloudrun"))

if CONFIG.platform == "sagemaker":
    from deploy.aws.contract import SageMakerContract

    # Outermost, ahead of the service's own edge: a translated /invocations request then
    # passes that edge like any other request.
    SegmentAnything.middlewares.insert(0, (SageMakerContract, {"limits": sagemaker_mode(CONFIG.sagemaker_mode),
                                                              "default_attributes": CONFIG.custom_attributes}))

if CONFIG.json_logs:
    from deploy.gcp.contract import CloudTraceMiddleware, install_cloud_logging

    SegmentAnything.middlewares.insert(0, (CloudTraceMiddleware, {}))
    install_cloud_logging(CONFIG.gcp_project)
