"""The Azure side of the rightsizer: a thin gateway over azure-mgmt-compute, its error types and the retry policy
shared with the Azure Monitor metrics source."""

from rightsizer.azure.errors import (
    AzureError,
    CapacityError,
    NotFoundError,
    PermanentAzureError,
    TransientAzureError,
)
from rightsizer.azure.gateway import (
    ComputeGateway,
    ScaleSetInfo,
    ScaleSetRef,
    SkuInfo,
    VmRef,
)
from rightsizer.azure.resources import UnreadableScaleSet
from rightsizer.azure.retry import RetrySettings

__all__ = [
    "AzureError",
    "CapacityError",
    "ComputeGateway",
    "NotFoundError",
    "PermanentAzureError",
    "RetrySettings",
    "ScaleSetInfo",
    "ScaleSetRef",
    "SkuInfo",
    "TransientAzureError",
    "UnreadableScaleSet",
    "VmRef",
]


def default_gateway(max_response_mb: float) -> ComputeGateway:
    """The gateway a command uses in production: the default credential, answers capped at ``max_response_mb``."""
    return ComputeGateway(default_credential(), max_response_mb=max_response_mb)


def default_credential() -> object:
    """``DefaultAzureCredential``: workload identity in AKS, environment or managed identity elsewhere."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
