"""Stand-ins for the `docker` and `kind` commands the roles run to build images and load them into
the kind node, for the playbooks run against the simulated cluster (Docker cannot run here, and
the simulated cluster has no node to load into). Named as stand-ins: they run no container.

`install(bin_dir, state_dir, arch, cluster)` writes `docker` and `kind` scripts into bin_dir that
run this module's `main`; what they answer follows the real commands the roles' tasks call:

- docker (Docker Engine 28, CLI with the buildx plugin): `version --format json` and
  `version --format '{{ json . }}'` (the preflight role, community.docker's common_cli, the
  kind-load tasks), `info --format '{{ json . }}'` (common_cli's plugin lookup), `buildx version`,
  `image ls --format '{{ json . }}' --no-trunc --filter reference=<name>` and `image inspect <id>`
  (common_cli.find_image), `buildx build --progress plain --tag <name:tag> -- <context>`
  (docker_image_build), `image save [--platform linux/<arch>] -o <file> <image>`, and
  `exec <cluster>-control-plane crictl inspecti <ref>` (is the image on the node). The global
  options common_cli puts first (`--host <address>`) are accepted and ignored.
- kind v0.29.0: `version`, and `load image-archive <file> --name <cluster>`.

What they check, each a failure of the command (exit 1, the reason on stderr) and recorded in the
state's `errors`: a build context holds a Dockerfile whose every FROM is pinned by digest; an
image is saved only once built, for the daemon's platform (the node's: a kind node runs on the
daemon's architecture), into a file that then exists; kind loads only an archive that exists, was
saved for the node's platform, into the cluster it was asked for. Every call is recorded in
`calls`; the images built and the images on the node are the state the next call sees, so a
second playbook run finds them (and changes nothing).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

__all__ = ["StandInState", "install", "node_reference", "read_state"]

STATE_FILE = "container-standins.json"
DOCKER_VERSION = "28.3.3"
DOCKER_API_VERSION = "1.51"
BUILDX_VERSION = "v0.26.1"
KIND_VERSION = "v0.29.0"
# Options of the docker CLI that come before the command and take a value (common_cli's).
GLOBAL_OPTIONS_WITH_VALUE = {
    "--host",
    "-H",
    "--context",
    "-c",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
}
GLOBAL_FLAGS = {"--tls", "--tlsverify"}
# What the scripts run: not a program of its own (its arguments are docker's and kind's).
_ENTRY = "import sys; from income_bundle_dev.container_standins import main; sys.exit(main(sys.argv[1:]))"


class StandInState(dict):
    """The JSON state: config (arch, cluster), images, node_images, calls, errors."""


def read_state(state_dir: Path) -> StandInState:
    return StandInState(json.loads((Path(state_dir) / STATE_FILE).read_text()))


def install(bin_dir: Path, state_dir: Path, arch: str, cluster: str) -> None:
    """Write the docker and kind stand-ins into bin_dir, their state into state_dir."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = {"arch": arch, "cluster": cluster, "images": {}, "node_images": [], "calls": [],
             "errors": []}  # fmt: skip
    (state_dir / STATE_FILE).write_text(json.dumps(state, indent=1))
    for tool in ("docker", "kind"):
        script = bin_dir / tool
        script.write_text(
            f"#!/bin/sh\n# Stand-in for {tool} (income_bundle_dev.container_standins).\n"
            f"exec {sys.executable} -c '{_ENTRY}' {state_dir} {tool} \"$@\"\n"
        )
        script.chmod(0o755)


def node_reference(image: str) -> str:
    """The reference containerd records for a Docker reference: docker.io/ for Docker Hub,
    library/ for its one-part names, :latest when untagged."""
    name, _, digest = image.partition("@")
    first, _, rest = name.partition("/")
    if not rest or not (re.search(r"[.:]", first) or first == "localhost"):
        name = f"docker.io/{name if rest else 'library/' + name}"
    if not digest and ":" not in name.rpartition("/")[2]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


class RefusedError(Exception):
    """The command fails: what a real one would say, or what the stand-in checks."""


@contextmanager
def _locked_state(state_dir: Path):
    path = Path(state_dir) / STATE_FILE
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text())
        try:
            yield state
        finally:
            path.write_text(json.dumps(state, indent=1))


def _json_format(args: list[str]) -> bool:
    return args[:2] in (
        ["--format", "json"],
        ["--format", "{{ json . }}"],
        ["--format", "{{json .}}"],
    )


def _docker(state: dict, args: list[str]) -> str:
    while args and args[0].startswith("-"):
        if args[0] in GLOBAL_OPTIONS_WITH_VALUE:
            args = args[2:]
        elif args[0] in GLOBAL_FLAGS:
            args = args[1:]
        else:
            raise RefusedError(f"unknown flag: {args[0]}")
    command, rest = (args[0], args[1:]) if args else ("", [])
    arch = state["arch"]
    if command == "version" and _json_format(rest):
        return json.dumps({
            "Client": {"Version": DOCKER_VERSION, "ApiVersion": DOCKER_API_VERSION},
            "Server": {"Version": DOCKER_VERSION, "ApiVersion": DOCKER_API_VERSION,
                       "Arch": arch, "Os": "linux"},
        })  # fmt: skip
    if command == "info" and _json_format(rest):
        return json.dumps({
            "ClientInfo": {"Plugins": [{"Name": "buildx", "Version": BUILDX_VERSION}]},
            "Architecture": {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch),
            "MemTotal": 8 * 1024**3, "NCPU": 4,
        })  # fmt: skip
    if command == "buildx" and rest[:1] == ["version"]:
        return f"github.com/docker/buildx {BUILDX_VERSION} stand-in"
    if command == "buildx" and rest[:1] == ["build"]:
        return _build(state, rest[1:])
    if command == "image" and rest[:1] == ["ls"]:
        wanted = next((a.split("=", 1)[1] for a in rest if a.startswith("reference=")), None)
        return "\n".join(
            json.dumps(
                {
                    "ID": image["id"],
                    "Repository": ref.rpartition(":")[0],
                    "Tag": ref.rpartition(":")[2],
                }
            )
            for ref, image in state["images"].items()
            if wanted is None or ref.rpartition(":")[0] == wanted
        )
    if command == "image" and rest[:1] == ["inspect"]:
        found = [
            {"Id": image["id"], "RepoTags": [ref], "Architecture": image["arch"], "Os": "linux"}
            for ref, image in state["images"].items()
            if image["id"] in rest[1:] or ref in rest[1:]
        ]
        if not found:
            raise RefusedError(f"Error: No such image: {' '.join(rest[1:])}")
        return json.dumps(found)
    if command == "image" and rest[:1] == ["save"]:
        return _save(state, rest[1:])
    if command == "exec" and rest[1:3] == ["crictl", "inspecti"]:
        if rest[0] != f"{state['cluster']}-control-plane":
            raise RefusedError(f"Error response from daemon: No such container: {rest[0]}")
        if node_reference(rest[3]) not in state["node_images"]:
            raise RefusedError(f'no such image "{rest[3]}" present')
        return json.dumps({"status": {"repoTags": [node_reference(rest[3])]}})
    raise RefusedError(f"the docker stand-in does not model: docker {' '.join(args)}")


def _build(state: dict, args: list[str]) -> str:
    if "--" not in args:
        raise RefusedError("buildx build: no context")
    options, context = args[: args.index("--")], Path(args[args.index("--") + 1])
    tags = [options[i + 1] for i, a in enumerate(options) if a == "--tag"]
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        raise RefusedError(f"ERROR: failed to read dockerfile: open {dockerfile}: no such file")
    text = dockerfile.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    unpinned = [base for base in bases if "@sha256:" not in base]
    if not bases or unpinned:
        raise RefusedError(
            f"{dockerfile}: every FROM must be pinned by digest, not {unpinned or bases}"
        )
    image_id = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    for tag in tags:
        state["images"][tag] = {"id": image_id, "arch": state["arch"], "bases": bases}
    return f"#1 naming to docker.io/library/{' '.join(tags)} done (stand-in)"


def _save(state: dict, args: list[str]) -> str:
    platform, output, images = None, None, []
    while args:
        if args[0] == "--platform":
            platform, args = args[1], args[2:]
        elif args[0] in ("-o", "--output"):
            output, args = args[1], args[2:]
        else:
            images, args = [*images, args[0]], args[1:]
    if output is None or len(images) != 1:
        raise RefusedError("image save: the stand-in models one image saved with -o <file>")
    (image,) = images
    built = state["images"].get(image)
    if built is None:
        raise RefusedError(f"Error response from daemon: reference does not exist: {image}")
    daemon = f"linux/{state['arch']}"
    if platform not in (None, daemon):
        raise RefusedError(f"image save --platform {platform}: the image is {daemon} only")
    archive = {"image": image, "id": built["id"], "platform": platform or daemon}
    Path(output).write_text(json.dumps(archive))
    return ""


def _kind(state: dict, args: list[str]) -> str:
    if args == ["version"]:
        return f"kind {KIND_VERSION} go1.24.2 linux/{state['arch']}"
    if args[:2] == ["load", "image-archive"] and len(args) == 5 and args[3] == "--name":
        archive_path, cluster = Path(args[2]), args[4]
        if cluster != state["cluster"]:
            raise RefusedError(f'ERROR: no nodes found for cluster "{cluster}"')
        if not archive_path.is_file():
            raise RefusedError(f"ERROR: failed to load image: open {archive_path}: no such file")
        archive = json.loads(archive_path.read_text())
        if archive["platform"] != f"linux/{state['arch']}":
            raise RefusedError(
                f"ERROR: {archive['image']} was saved for {archive['platform']}, the node is "
                f"linux/{state['arch']}"
            )
        reference = node_reference(archive["image"])
        if reference not in state["node_images"]:
            state["node_images"].append(reference)
        return ""
    raise RefusedError(f"the kind stand-in does not model: kind {' '.join(args)}")


def main(argv: list[str]) -> int:
    state_dir, tool, args = Path(argv[0]), argv[1], argv[2:]
    with _locked_state(state_dir) as state:
        call = {"tool": tool, "args": args}
        state["calls"].append(call)
        try:
            output = (_docker if tool == "docker" else _kind)(state, list(args))
        except RefusedError as refused:
            call["rc"] = 1
            # A missing image on the node or in Docker is an answer, not a stand-in's complaint.
            if not re.match(r"(no such image|Error: No such image)", str(refused)):
                state["errors"].append(f"{tool} {' '.join(args)}: {refused}")
            print(refused, file=sys.stderr)
            return 1
        call["rc"] = 0
    if output:
        print(output)
    return 0
