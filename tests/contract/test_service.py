"""Both sides of the contract agree: the container serves what the infrastructure probes, scrapes and sets.

The import tests run in a fresh interpreter, because this test process has long imported Pulumi for other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contract import service
from contract.topology import DEFAULT_TOPOLOGY
from infra import offline

REPO = Path(__file__).resolve().parents[2]


def _modules_after(imports: str) -> set[str]:
    """Top-level modules that running ``imports`` adds to a fresh interpreter started in the repository root."""
    code = (
        "import sys, json\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        f"{imports}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - before)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_serving_never_imports_pulumi_or_the_component_library():
    loaded = _modules_after("import serving, serving.app, serving.api, serving.settings, serving.model_store")
    assert "fastapi" in loaded, "the probe must see what serving imports"
    assert not {m for m in loaded if m.startswith("pulumi") or m == "infra"}, sorted(loaded)


def test_the_contract_imports_only_the_standard_library():
    loaded = _modules_after("import contract, contract.topology, contract.service")
    outside = {m for m in loaded - set(sys.stdlib_module_names) if not m.startswith("_")} - {"contract"}
    assert not outside, f"contract/ pulled in {sorted(outside)}"


def test_the_container_answers_the_paths_the_infrastructure_probes_and_scrapes():
    from fastapi.routing import APIRoute

    from serving import api

    assert {route.path for route in api.probes.routes if isinstance(route, APIRoute)} == {
        service.HEALTH_PATH,
        service.READINESS_PATH,
        service.METRICS_PATH,
    }


def test_the_container_serves_the_api_paths_the_gateway_routes():
    from fastapi.routing import APIRoute, APIWebSocketRoute

    from serving import api, stream_api

    assert service.BATCH_PATH in {
        r.path for r in api.v1.routes if isinstance(r, APIRoute) and "POST" in (r.methods or ())
    }
    assert service.STREAM_PATH in {r.path for r in stream_api.router.routes if isinstance(r, APIWebSocketRoute)}
    assert all(p.startswith(service.API_PREFIX) for p in (service.BATCH_PATH, service.STREAM_PATH))


def test_the_container_serves_the_grpc_service_the_gateway_routes_on_the_contracts_port():
    from serving.grpc_api import generated
    from serving.settings import Settings

    messages, _ = generated.load()
    assert messages.DESCRIPTOR.services_by_name["Speech"].full_name == service.GRPC_SERVICE
    assert Settings().grpc.port == service.GRPC_PORT


def test_batch_admission_is_exported_as_the_gauge_batch_autoscaling_reads():
    from serving.metrics import ServingMetrics
    from serving.state import BatchSlots

    metrics = ServingMetrics("eu-west")
    slots = BatchSlots(limit=2, metrics=metrics)
    assert slots.try_enter() and slots.try_enter() and not slots.try_enter()
    value = metrics.registry.get_sample_value(service.METRIC_BATCH_IN_FLIGHT, {"region": "eu-west"})
    assert value == 2
    slots.leave()
    assert metrics.registry.get_sample_value(service.METRIC_BATCH_IN_FLIGHT, {"region": "eu-west"}) == 1


def test_the_workload_targets_the_serving_and_grpc_ports_and_health_checks_probe_readiness(program):
    graph = program("eu-west")
    (target_group,) = graph.of_type("aws:lb/targetGroup:TargetGroup")
    assert target_group.inputs["healthCheck"]["path"] == service.READINESS_PATH
    rollouts = graph.of_type("kubernetes:argoproj.io/v1alpha1:Rollout")
    assert rollouts, "the serving pods are the Rollouts'"
    for rollout in rollouts:
        (container,) = rollout.inputs["spec"]["template"]["spec"]["containers"]
        assert [p["containerPort"] for p in container["ports"]] == [service.SERVING_PORT, service.GRPC_PORT]
        assert container["readinessProbe"]["grpc"]["service"] == service.GRPC_SERVICE
    for svc in graph.of_type("kubernetes:core/v1:Service"):
        assert [p["port"] for p in svc.inputs["spec"]["ports"]] == [service.SERVING_PORT, service.GRPC_PORT]
    (check,) = graph.of_type("aws:route53/healthCheck:HealthCheck")
    assert check.inputs["resourcePath"] == service.READINESS_PATH


def test_every_metric_the_contract_names_is_exported_with_its_labels():
    from serving.metrics import ServingMetrics

    metrics = ServingMetrics("eu-west")
    metrics.request("1.0.0", "/v1/asr", 200, 0.1)
    metrics.inference("whisper-base", "1.0.0", "batch", 2.0, 0.1)
    metrics.stream_opened("1.0.0")
    metrics.batch_in_flight(3)
    metrics.error("1.0.0", "bad_audio")
    metrics.partial_dropped("1.0.0", "overload")
    metrics.speculative_final("1.0.0", "used")
    metrics.stream_held_back("1.0.0", 0.5)
    metrics.residency_refused("1.0.0", "eu", "/v1/asr")
    metrics.model_loaded("asr", "whisper-base", "1.0.0")
    metrics.model_reload("asr", "whisper-base", "1.0.0", "swapped")
    metrics.shadow_compared("1.0.0", "1.1.0", 0.1, -0.2)
    metrics.shadow_skipped("1.0.0", "inference_busy")
    metrics.tts_cache_lookup("1.0.0", "hit", 100)
    metrics.tts_cache_written("1.0.0", 100)
    metrics.tts_cache_error("redis", "get", "timeout")
    metrics.tts_cache_held(100)
    samples = {s.name: s.labels for family in metrics.registry.collect() for s in family.samples}
    named = {value for key, value in vars(service).items() if key.startswith("METRIC_") and isinstance(value, str)}
    for name in named:
        # Histograms are exported as <name>_bucket/_sum/_count, counters and gauges under their own name.
        found = [labels for sample, labels in samples.items() if sample in (name, f"{name}_count")]
        assert found, f"{name} is not exported; exported: {sorted(samples)}"
        # The contract documents the exceptions: series that belong to no model version.
        expected = {"region"} if name in service.METRICS_WITHOUT_VERSION else set(service.METRIC_LABELS)
        assert expected <= set(found[0]), f"{name} lacks {expected}"


def test_every_variable_the_infrastructure_may_set_is_a_setting_the_container_reads():
    from serving.model_dir import CACHE_ENV
    from serving.settings import Settings

    not_settings = ("ENV_PREFIX", "ENV_NESTED_DELIMITER", "ENV_MODEL_CACHE")
    names = [value for key, value in vars(service).items() if key.startswith("ENV_") and key not in not_settings]
    assert service.ENV_TOPOLOGY_FILE in names
    for name in names:
        assert name.startswith(service.ENV_PREFIX), name
        model: Any = Settings
        for part in name.removeprefix(service.ENV_PREFIX).lower().split(service.ENV_NESTED_DELIMITER):
            assert isinstance(model, type) and issubclass(model, BaseModel), f"{name}: {part!r} is inside a value"
            assert part in model.model_fields, f"{name}: {model.__name__} has no field {part!r}"
            model = model.model_fields[part].annotation
    assert Settings.model_config["env_prefix"] == service.ENV_PREFIX
    assert Settings.model_config["env_nested_delimiter"] == service.ENV_NESTED_DELIMITER
    assert CACHE_ENV == service.ENV_MODEL_CACHE


def test_both_sides_use_one_model_store_layout(program, tmp_path):
    from serving.model_store import ModelStore

    assert service.model_prefix("whisper-base", "1.1.0") == "models/whisper-base/1.1.0/"
    assert service.model_prefix("whisper-base").startswith(service.MODELS_PREFIX)
    client = ModelStore(
        "speech-models", "eu-west-1", tmp_path, topology=DEFAULT_TOPOLOGY, endpoint_url="http://127.0.0.1:9"
    )
    assert client.url("whisper-base", "1.1.0") == "s3://speech-models/models/whisper-base/1.1.0/"
    rules = [r for c in program("global").of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
             for r in c.inputs["rules"]]  # fmt: skip
    assert rules and {rule["filter"]["prefix"] for rule in rules} == {service.MODELS_PREFIX}
    graph = program("us-west")
    (serving_policy,) = [r for r in graph.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("serving-policy")]
    (read,) = [s for s in json.loads(serving_policy.inputs["policy"])["Statement"] if s.get("Sid") == "ReadModels"]
    assert read["Resource"].endswith(f"/{service.MODELS_PREFIX}*")
    assert graph.exports["modelBucketName"] == service.model_bucket_name(
        offline.project_name(), "us-west", offline.MOCK_ACCOUNT_ID
    )
    (lifecycle,) = graph.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert lifecycle.inputs["rules"][0]["filter"]["prefix"] == service.MODELS_PREFIX
