"""The deployment files agree with the code, without a container runtime.

Kubernetes manifests validate against the API schemas (offline, from the
``kubernetes-validate`` package), the Kustomize layout is built here from its
``resources``, command lines are parsed by the real ``georouter`` parser,
configurations pass the real ``georouter check``, probe paths are asked of a
real edge, and the systemd unit goes through ``systemd-analyze verify``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml

from georouter import __version__
from georouter.cli import DEFAULT_LISTEN, _env_secrets, build_parser, main
from georouter.config import HealthSettings, LimitsSettings, load
from georouter.demo.standin import StandIn
from georouter.errors import UsageError
from georouter.serve.server import ListenAddress, _hypercorn_config
from tests.harness import (
    FAST_HEALTH,
    REPO,
    Edge,
    cluster_entries,
    config_text,
    georouter_command,
    wait_for,
)

DEPLOY = REPO / "deploy"
KUSTOMIZATIONS = {
    "base": DEPLOY / "kubernetes" / "base",
    "example-overlay": DEPLOY / "kubernetes" / "overlays" / "example",
}
# The oldest Kubernetes still widely run, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
DEFAULT_PORT = ListenAddress.parse(DEFAULT_LISTEN).port

# ---------------------------------------------------------------- reading the files


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """``kustomize build`` of the few features these kustomizations use."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "resources", "images", "replicas"}
    unknown = set(spec) - known - {"configMapGenerator"}
    assert not unknown, f"{folder}: teach tests/test_deploy.py kustomize() {sorted(unknown)}"
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        docs += (
            kustomize(path)
            if path.is_dir()
            else [*filter(None, yaml.safe_load_all(path.read_text()))]
        )
    for gen in spec.get("configMapGenerator", []):
        assert set(gen) <= {"name", "files", "behavior", "options"}, gen
        # A hash suffix would roll every pod on each change instead of a hot reload.
        assert gen["options"] == {"disableNameSuffixHash": True}, gen
        same = [
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == gen["name"]
        ]
        assert len(same) == (gen.get("behavior", "create") == "replace"), gen
        docs = [d for d in docs if not any(d is s for s in same)]
        data = {Path(f).name: (folder / f).read_text() for f in gen["files"]}
        meta = {"name": gen["name"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for image in spec.get("images", []):
        for doc in docs:
            for c in containers(doc):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for replicas in spec.get("replicas", []):
        find(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = spec["namespace"]
    return docs


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(pod.get("containers", []))


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def parse_command(argv: list[str]) -> Any:
    """``argv`` (without the program) as the real ``georouter`` parser reads it."""
    try:
        return build_parser().parse_args([str(a) for a in argv])
    except SystemExit:
        pytest.fail(f"not a valid georouter command line: {shlex.join(map(str, argv))}")


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", re.sub(r"(?m)^\s*#.*\n", "", text))
    return [
        (line.split()[0].upper(), line.split(None, 1)[1])
        for line in joined.splitlines()
        if line.strip()
    ]


def instruction(name: str) -> str:
    found = [rest for instr, rest in dockerfile() if instr == name]
    assert len(found) == 1, f"the Dockerfile should have one {name}, has {len(found)}"
    return found[0]


def healthcheck_command() -> str:
    """The exec form of the Dockerfile's HEALTHCHECK."""
    return instruction("HEALTHCHECK").split(" CMD ", 1)[1]


def image_command() -> list[str]:
    return [*json.loads(instruction("ENTRYPOINT")), *json.loads(instruction("CMD"))]


def readme_deployment_code() -> list[str]:
    """The lines of the code blocks in README.md's Deployment section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines()]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[no-any-return]


def georouter_services() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {n: s for n, s in services.items() if s["image"].startswith("georouter:")}


def compose_edges() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in georouter_services().items() if s["command"][0] == "serve"}


def unit_values(key: str) -> list[str]:
    text = (DEPLOY / "georouter.service").read_text()
    return re.findall(rf"(?m)^{key}=(.*)$", text)


def in_flight_allowance_s() -> float:
    """How long in-flight requests get once a drain ends (Hypercorn's graceful timeout)."""
    with socket.socket() as sock:
        config = _hypercorn_config(sock, LimitsSettings())
    os.close(int(config.bind[0].removeprefix("fd://")))
    return float(config.graceful_timeout)


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        georouter_command("check", "--config", str(config)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def edge_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = containers(find(docs, "Deployment", "georouter"))
    return container


def configmap_config(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    """The edge's clusters.toml as the ConfigMap mounted for it holds it."""
    container = edge_container(docs)
    args = parse_command(container["args"])
    mount = next(
        m for m in container["volumeMounts"] if Path(args.config).parent == Path(m["mountPath"])
    )
    pod = find(docs, "Deployment", "georouter")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    data = find(docs, "ConfigMap", volume["configMap"]["name"])["data"]
    path = tmp_path / Path(args.config).name
    path.write_text(data[Path(args.config).name])
    return path


# ---------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("folder", KUSTOMIZATIONS.values(), ids=KUSTOMIZATIONS.keys())
def test_every_kubernetes_manifest_is_valid_against_the_api_schemas(
    folder: Path, version: str
) -> None:
    docs = kustomize(folder)
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
    }
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{folder}: {doc['kind']} {doc['metadata']['name']}: {exc}")


@pytest.mark.parametrize("folder", KUSTOMIZATIONS.values(), ids=KUSTOMIZATIONS.keys())
def test_the_configmap_passes_georouter_check_and_names_the_redis_service(
    folder: Path, tmp_path: Path
) -> None:
    docs = kustomize(folder)
    path = configmap_config(docs, tmp_path)
    result = check(path)
    assert result.returncode == 0, result.stderr
    config = load(path)
    assert config.router.watch_config_s > 0, "hot reload of the ConfigMap is off"
    assert config.sessions.redis is not None
    url = urlsplit(config.sessions.redis.url)
    service = find(docs, "Service", str(url.hostname))
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    # Every folder the edge writes is a volume: the root file system is read-only.
    mounts = [Path(m["mountPath"]) for m in edge_container(docs)["volumeMounts"]]
    assert config.sessions.state_dir in mounts


def test_the_configmap_is_mounted_as_a_folder_so_the_edge_sees_it_change() -> None:
    container = edge_container(kustomize(KUSTOMIZATIONS["base"]))
    args = parse_command(container["args"])
    assert args.command == "serve"
    mounts = [
        m for m in container["volumeMounts"] if Path(args.config).parent == Path(m["mountPath"])
    ]
    assert len(mounts) == 1, container["volumeMounts"]
    # A subPath mount keeps the first file for the life of the pod.
    assert "subPath" not in mounts[0]


def test_the_edge_listens_on_the_default_port_behind_its_service_and_budget() -> None:
    docs = kustomize(KUSTOMIZATIONS["base"])
    deployment = find(docs, "Deployment", "georouter")
    container = edge_container(docs)
    listen = ListenAddress.parse(parse_command(container["args"]).listen)
    assert listen == ListenAddress("0.0.0.0", DEFAULT_PORT)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for service in (find(docs, "Service", "georouter"), find(docs, "Service", "georouter-redis")):
        selected = [
            d
            for d in docs
            if d["kind"] == "Deployment"
            and service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        named = {p["name"] for c in containers(selected[0]) for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named
    assert (
        ports[find(docs, "Service", "georouter")["spec"]["ports"][0]["targetPort"]] == DEFAULT_PORT
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == DEFAULT_PORT
    pdb = find(docs, "PodDisruptionBudget", "georouter")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_every_pod_runs_unprivileged_on_a_read_only_root() -> None:
    docs = kustomize(KUSTOMIZATIONS["base"])
    image_user = instruction("USER").split(":")[0]
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "memory" in container["resources"]["limits"]
    pod = find(docs, "Deployment", "georouter")["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == image_user != "0"


def test_images_are_tagged_with_the_package_version() -> None:
    assert edge_container(kustomize(KUSTOMIZATIONS["base"]))["image"] == f"georouter:{__version__}"
    image = edge_container(kustomize(KUSTOMIZATIONS["example-overlay"]))["image"]
    assert image.endswith(f"/georouter:{__version__}")
    assert {s["image"] for s in georouter_services().values()} == {f"georouter:{__version__}"}


def test_the_secrets_passed_to_edges_are_the_variables_georouter_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = edge_container(kustomize(KUSTOMIZATIONS["base"]))["env"]
    names = {e["name"] for e in env}
    assert all(e["valueFrom"]["secretKeyRef"]["key"] == e["name"] for e in env)
    assert all(set(s["environment"]) == names for s in compose_edges().values())
    for name in names:
        for other in names:
            monkeypatch.delenv(other, raising=False)
        # A value too short for either: georouter must refuse it by this name.
        monkeypatch.setenv(name, "short")
        with pytest.raises(UsageError, match=f"^{name}: "):
            _env_secrets()


def drain_cases() -> dict[str, tuple[float, list[str]]]:
    """Per supervisor: how long it waits after SIGTERM, and the command it runs."""
    container = edge_container(kustomize(KUSTOMIZATIONS["base"]))
    grace = find(kustomize(KUSTOMIZATIONS["base"]), "Deployment", "georouter")["spec"]["template"][
        "spec"
    ]["terminationGracePeriodSeconds"]
    cases = {"kubernetes": (float(grace), container["args"])}
    for name, service in compose_edges().items():
        cases[f"compose-{name}"] = (
            float(service["stop_grace_period"].removesuffix("s")),
            service["command"],
        )
    (timeout,) = unit_values("TimeoutStopSec")
    cases["systemd"] = (float(timeout), shlex.split(unit_values("ExecStart")[0])[1:])
    return cases


@pytest.mark.parametrize("case", drain_cases().keys())
def test_the_stop_timeout_outlasts_the_drain_and_the_requests_in_flight(case: str) -> None:
    grace_s, argv = drain_cases()[case]
    drain_s = parse_command(argv).drain_s
    assert drain_s > 0
    assert grace_s > drain_s + in_flight_allowance_s()


def test_the_drain_outlasts_the_readiness_probe_noticing_it() -> None:
    container = edge_container(kustomize(KUSTOMIZATIONS["base"]))
    probe = container["readinessProbe"]
    assert (
        parse_command(container["args"]).drain_s
        > probe["periodSeconds"] * probe["failureThreshold"]
    )


def test_the_probe_paths_answer_as_their_supervisors_expect_while_an_edge_drains(
    make_standins: Callable[..., dict[str, StandIn]],
    write_config: Callable[[str], Path],
    make_edge: Callable[..., Edge],
) -> None:
    container = edge_container(kustomize(KUSTOMIZATIONS["base"]))
    healthcheck = re.search(r"'(http://[^']+)'", instruction("HEALTHCHECK"))
    assert healthcheck, instruction("HEALTHCHECK")
    stay_up = {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")}
    stay_up.add(urlsplit(healthcheck.group(1)).path)
    readiness = container["readinessProbe"]["httpGet"]["path"]
    config = write_config(
        config_text(cluster_entries(make_standins("eu-west")), health=FAST_HEALTH)
    )
    edge = make_edge(config, args=("--drain-s", "60"))
    for path in [*stay_up, readiness]:
        assert edge.get(path).status_code == 200, path
    edge.process.send_signal(signal.SIGTERM)
    wait_for(lambda: edge.get(readiness).status_code == 503, timeout_s=10, what="readiness 503")
    for path in stay_up:
        # A liveness probe failing here would have the kubelet kill a draining pod.
        assert edge.get(path).status_code == 200, path
    edge.process.send_signal(signal.SIGTERM)  # the second one cuts the drain short
    assert edge.process.wait(timeout=20) == 0, edge.log()


# ---------------------------------------------------------------- Docker, README, systemd


def test_the_dockerfile_installs_and_runs_georouter_as_the_readme_says() -> None:
    code = readme_deployment_code()
    installs = [rest for instr, rest in dockerfile() if instr == "RUN" and "pip install" in rest]
    assert installs, "the Dockerfile installs nothing with pip"
    for install in installs:
        assert install in code, f"README.md's Deployment section does not show: {install}"
    command = image_command()
    assert shlex.join(command) in code, f"README.md does not show: {shlex.join(command)}"
    assert shlex.split(unit_values("ExecStart")[0]) == command


def test_the_image_serves_as_a_non_root_user_on_the_default_port() -> None:
    command = image_command()
    args = parse_command(command[1:])
    assert args.command == "serve"
    assert ListenAddress.parse(args.listen) == ListenAddress("0.0.0.0", DEFAULT_PORT)
    assert instruction("EXPOSE") == str(DEFAULT_PORT)
    assert instruction("USER").split(":")[0] not in ("0", "root")
    url = urlsplit(re.findall(r"'(http://[^']+)'", instruction("HEALTHCHECK"))[0])
    assert (url.hostname, url.port) == ("127.0.0.1", DEFAULT_PORT)


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


def glob_regex(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus ``**``) as a regex."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?|\[[^]]*\])", glob)
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile(
        "".join(wild.get(t, t if t.startswith("[") else re.escape(t)) for t in tokens)
    )


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    lines = [raw.strip() for raw in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    return [(rule.startswith("!"), glob_regex(rule.removeprefix("!"))) for rule in rules]


def test_the_build_context_holds_every_file_the_image_copies() -> None:
    rules = dockerignore_rules()
    copied = [
        rest.split()[:-1]
        for instr, rest in dockerfile()
        if instr == "COPY" and "--from" not in rest
    ]
    sources = {source for sources in copied for source in sources}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {"pyproject.toml", project["readme"], "georouter"} <= sources
    for source in sources:
        path = REPO / source
        files = (
            [path]
            if path.is_file()
            else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
        assert files, f"the Dockerfile copies {source}, which does not exist"
        for file in files:
            rel = file.relative_to(REPO).as_posix()
            assert not dockerignored(rel, rules), f".dockerignore leaves out {rel}"
    assert dockerignored(".venv/bin/python", rules)
    assert dockerignored("georouter/__pycache__/cli.cpython-311.pyc", rules)


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, (
        "systemd-analyze is missing: it comes with systemd (Debian/Ubuntu: apt-get install"
        " systemd; Fedora: dnf install systemd)"
    )
    # verify proves every command exists: the unit's installed georouter is this one.
    installed = image_command()[0]
    unit = tmp_path / "georouter.service"
    here = str(Path(sys.executable).parent / "georouter")
    unit.write_text((DEPLOY / "georouter.service").read_text().replace(installed, here))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # An unknown key or a bad value is only a warning (exit 0): none may be printed.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_every_deploy_path_the_readme_names_exists() -> None:
    named = set(re.findall(r"deploy/[\w./-]*\w", (REPO / "README.md").read_text()))
    assert named, "README.md names nothing under deploy/"
    assert [p for p in sorted(named) if not (REPO / p).exists()] == []


# ---------------------------------------------------------------- Compose and stand-ins


def test_compose_commands_are_valid_georouter_command_lines() -> None:
    services = georouter_services()
    commands = [parse_command(s["command"]).command for s in services.values()]
    assert sorted(set(commands)) == ["serve", "standin"]
    assert commands.count("serve") >= 2, "two edges share the session map"


def test_compose_edges_share_one_redis_and_reach_every_cluster_standin(tmp_path: Path) -> None:
    services = compose()["services"]
    configs = set()
    for name, edge in compose_edges().items():
        args = parse_command(edge["command"])
        assert ListenAddress.parse(args.listen).port == DEFAULT_PORT
        assert all(p.endswith(f":{DEFAULT_PORT}") for p in edge["ports"]), name
        host, mount = next(
            v.split(":")[:2]
            for v in edge["volumes"]
            if Path(args.config).parent == Path(v.split(":")[1])
        )
        configs.add((DEPLOY / host / Path(args.config).relative_to(mount)).resolve())
    (config_path,) = configs
    result = check(config_path)
    assert result.returncode == 0, result.stderr
    config = load(config_path)
    assert config.sessions.redis is not None
    assert services[str(urlsplit(config.sessions.redis.url).hostname)]["image"].startswith("redis:")
    for cluster in config.clusters:
        url = urlsplit(cluster.url)
        standin = parse_command(services[str(url.hostname)]["command"])
        assert (standin.command, standin.name) == ("standin", cluster.name)
        # On every interface: the edges reach it from other containers.
        assert ipaddress.ip_address(standin.listen.host).is_unspecified
        assert standin.listen.port == url.port
        assert standin.health_path == config.health.path
        # The edges start once it answers (else their first probe finds it down),
        # and it is asked its health as the image asks an edge.
        service = services[str(url.hostname)]
        assert service["healthcheck"]["test"] == ["CMD", *json.loads(healthcheck_command())]
        for edge in compose_edges().values():
            assert edge["depends_on"][url.hostname] == {"condition": "service_healthy"}


def test_standin_serves_its_cluster_name_until_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "standin.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            georouter_command("standin", "eu-west", "--listen", "127.0.0.1:0"), stderr=out
        )
    try:
        found = wait_for(
            lambda: re.search(r"listening on (http://\S+)", log.read_text()),
            timeout_s=20,
            what="georouter standin to listen",
        )
        with httpx.Client(base_url=found.group(1), timeout=5) as client:
            health = client.get(HealthSettings().path)
            assert (health.status_code, health.json()["cluster"]) == (200, "eu-west")
            answer = client.post("/cart/42", content=b"abc")
            assert answer.headers["x-cluster"] == "eu-west"
            assert answer.json() == {
                "cluster": "eu-west",
                "method": "POST",
                "path": "/cart/42",
                "body_bytes": 3,
            }
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["standin", "no spaces"], "NAME"),
        (["standin", "eu-west", "--listen", "nowhere"], "--listen"),
        (["standin", "eu-west", "--listen", "127.0.0.1:70000"], "--listen"),
        (["standin", "eu-west", "--health-path", "healthz"], "--health-path"),
    ],
    ids=["bad-name", "no-port", "port-out-of-range", "relative-health-path"],
)
def test_standin_refuses_bad_arguments_naming_them(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {named}" in capsys.readouterr().err


def test_standin_on_a_taken_address_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["standin", "eu-west", "--listen", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "--listen" in err
    assert "in use" in err
