"""The committed stubs must be exactly what scripts/gen_proto.sh generates from proto/externalscaler.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from scaler_service._generated import externalscaler_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "scaler_service" / "_generated"
STUBS = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py", "__init__.py")


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True, env=env, cwd=ROOT)
    for name in STUBS:
        fresh = (tmp_path / name).read_text()
        committed = (GENERATED / name).read_text()
        assert fresh == committed, f"{name} differs from the proto: run scripts/gen_proto.sh"


def test_wire_contract_is_kedas() -> None:
    """Field numbers, names and types exactly as KEDA's externalscaler.proto (see the facts file)."""
    fd = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(fd)
    assert fd.package == "externalscaler"
    T = descriptor_pb2.FieldDescriptorProto
    fields = {
        m.name: {f.name: (f.number, f.type, f.label == T.LABEL_REPEATED) for f in m.field} for m in fd.message_type
    }
    assert fields["ScaledObjectRef"]["name"] == (1, T.TYPE_STRING, False)
    assert fields["ScaledObjectRef"]["namespace"] == (2, T.TYPE_STRING, False)
    assert fields["ScaledObjectRef"]["scalerMetadata"][:2] == (3, T.TYPE_MESSAGE)  # map<string,string>
    assert fields["IsActiveResponse"] == {"result": (1, T.TYPE_BOOL, False)}
    assert fields["GetMetricSpecResponse"] == {"metricSpecs": (1, T.TYPE_MESSAGE, True)}
    assert fields["MetricSpec"] == {
        "metricName": (1, T.TYPE_STRING, False),
        "targetSize": (2, T.TYPE_INT64, False),
        "targetSizeFloat": (3, T.TYPE_DOUBLE, False),
    }
    assert fields["GetMetricsRequest"] == {
        "scaledObjectRef": (1, T.TYPE_MESSAGE, False),
        "metricName": (2, T.TYPE_STRING, False),
    }
    assert fields["GetMetricsResponse"] == {"metricValues": (1, T.TYPE_MESSAGE, True)}
    assert fields["MetricValue"] == {
        "metricName": (1, T.TYPE_STRING, False),
        "metricValue": (2, T.TYPE_INT64, False),
        "metricValueFloat": (3, T.TYPE_DOUBLE, False),
    }
    (service,) = fd.service
    assert service.name == "ExternalScaler"
    methods = {m.name: (m.input_type, m.output_type, m.server_streaming) for m in service.method}
    assert methods == {
        "IsActive": (".externalscaler.ScaledObjectRef", ".externalscaler.IsActiveResponse", False),
        "StreamIsActive": (".externalscaler.ScaledObjectRef", ".externalscaler.IsActiveResponse", True),
        "GetMetricSpec": (".externalscaler.ScaledObjectRef", ".externalscaler.GetMetricSpecResponse", False),
        "GetMetrics": (".externalscaler.GetMetricsRequest", ".externalscaler.GetMetricsResponse", False),
    }
