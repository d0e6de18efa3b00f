"""How many training processes, on how many machines: the torchrun settings of qlora_adapter (pydantic, a help text
per field). Training always runs under torchrun, one process when these are left at their defaults."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, field_validator, model_validator

from ..core.validation import non_negative

def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of `host:port` (an IPv6 host in brackets: `[::1]:29400`).

    Raises:
        ValueError: "rdzv_endpoint must be host:port with a port in 1-65535, got '<endpoint>'".
    """
    host, sep, port = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in endpoint):
        raise ValueError(f"rdzv_endpoint must be host:port with a port in 1-65535, got {endpoint!r}")
    return host, int(port)


class LaunchSpec(BaseModel):
    nproc_per_node: int = Field(
        1, description="Training processes on each machine (torchrun --nproc-per-node): one per GPU; on a CPU, more "
        "processes split the batch across cores. Each process takes batch_size examples a step.")
    nnodes: int = Field(
        1, description="Machines training together (torchrun --nnodes). With more than 1, this step starts machine 0 "
        "and logs the command each other machine runs; all of them need the same paths (shared storage).")
    rdzv_endpoint: Optional[str] = Field(
        None, description="host:port where the machines meet (a store machine 0 hosts, reachable from all); required when "
        "nnodes > 1. Not part of the adapter's fingerprint.")
    # 0: a failed rank fails the step at once; the step's rerun resumes from the newest checkpoint instead
    max_restarts: int = Field(0, description="Times torchrun restarts all processes after one fails (from the newest "
                                             "checkpoint) before the step fails.")

    @field_validator("nproc_per_node", "nnodes")
    @classmethod
    def _at_least_one(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("max_restarts")
    @classmethod
    def _restarts(cls, v: int) -> int:
        return non_negative("max_restarts", v)

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            parse_endpoint(v)
        return v

    @model_validator(mode="after")
    def _rendezvous(self):
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes={self.nnodes} needs rdzv_endpoint (host:port of machine 0, reachable from "
                             "every machine)")
        return self

    def world_size(self) -> int:
        """Training processes in all: nnodes x nproc_per_node (the batch of a step is batch_size x grad_accum x this)."""
        return self.nnodes * self.nproc_per_node

    def launch_settings(self) -> dict:
        """These fields alone (a model that inherits them has others too)."""
        return {name: getattr(self, name) for name in LaunchSpec.model_fields}
