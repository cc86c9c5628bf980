"""systemd units for a box that runs Lineside at boot: one per service and one for the broker,
grouped by ``lineside.target``, each with a memory cap and a CPU weight (`lineside service install`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from lineside.errors import ConfigError
from lineside.metrics import DEFAULT_BASE_PORT, service_port
from lineside.security.layout import paths

TARGET = "lineside.target"
DEFAULT_DATA_DIR = Path("/var/lib/lineside")
"""Where a box installed with systemd keeps its data (``--data`` for elsewhere)."""
BROKER_UNIT = "lineside-broker.service"
SERVICE_ENV = "services.env"
"""Written by `lineside broker` into ``<data>/broker/``: settings every service unit reads (the llm workers' share group)."""

MEMORY_MAX_MB = {
    "broker": 256,
    "gateway": 384,
    "ingest": 1024,
    "retriever": 1280,
}
"""Hard memory caps in MiB, about twice the peaks measured on the 2-core box (docs/measurements.md:
Mosquitto 8, gateway 33, ingest 79 and up to 746 parsing a large PDF, retriever 481 and ~800 while
embedding a large batch); a service over its cap is killed and restarted, not the box."""

LLM_MEMORY_MAX_MB = {"none": 384, "tiny": 768, "default": 1536, "large": 3072}
"""The llm's cap by model profile: the model file is mapped into memory (default: peak 709 MiB)."""

CPU_WEIGHT = {"broker": 1000, "gateway": 1000, "retriever": 300, "ingest": 50, "llm": 100}
"""Shares of the CPU when the cores are busy (systemd's default is 100): the broker and the gateway
stay responsive while the llm generates, a search goes before generation, parsing waits."""


@dataclass(frozen=True, slots=True)
class UnitOptions:
    """What the units need to know about the box."""

    user: str = "lineside"
    data_dir: Path = DEFAULT_DATA_DIR
    python: Path = Path(sys.executable)
    profile: str = "default"
    port: int = 1883
    tls_port: int = 8883
    hosts: tuple[str, ...] = ()
    metrics_port: int = DEFAULT_BASE_PORT
    metrics_host: str = "127.0.0.1"


def _exec_of(o: UnitOptions) -> str:
    """The ``lineside`` command next to the interpreter (the venv's), else ``python -m lineside.cli``."""
    script = o.python.parent / "lineside"
    return str(script) if script.exists() else f"{o.python} -m lineside.cli"


def _common(o: UnitOptions, name: str, memory_mb: int) -> list[str]:
    return [
        f"User={o.user}",
        f"Group={o.user}",
        f"Environment=LINESIDE_DATA_DIR={o.data_dir}",
        f"Environment=LINESIDE_MQTT_PORT={o.port}",
        "Environment=MALLOC_ARENA_MAX=2",
        "Restart=always",
        "RestartSec=2",
        f"MemoryMax={memory_mb}M",
        f"CPUWeight={CPU_WEIGHT[name]}",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={o.data_dir}",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]


def _unit(description: str, after: list[str], service: list[str]) -> str:
    lines = [
        "# Written by `lineside service install`: run it again rather than editing this file.",
        "[Unit]",
        f"Description={description}",
        f"PartOf={TARGET}",
        f"After={' '.join(after)}",
        "Wants=network-online.target",
        # A unit that keeps dying is left down after 5 starts in 10 minutes, as `lineside up` does.
        "StartLimitIntervalSec=600",
        "StartLimitBurst=5",
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        f"WantedBy={TARGET}",
    ]
    return "\n".join(lines) + "\n"


def render(o: UnitOptions) -> dict[str, str]:
    """Unit file name -> text: the broker, the four services and ``lineside.target``."""
    if o.profile not in LLM_MEMORY_MAX_MB:
        raise ConfigError(f"unknown model profile {o.profile!r}: choose one of {', '.join(LLM_MEMORY_MAX_MB)}")
    if not o.data_dir.is_absolute():
        raise ConfigError(f"the data directory must be an absolute path, not {o.data_dir}")
    exe = _exec_of(o)
    units: dict[str, str] = {}
    hosts = "".join(f" --host {h}" for h in o.hosts)
    units[BROKER_UNIT] = _unit(
        "Lineside MQTT broker (Mosquitto, secure profile)",
        ["network-online.target"],
        [
            "Type=simple",
            f"ExecStart={exe} broker --port {o.port} --tls-port {o.tls_port}{hosts}",
            *_common(o, "broker", MEMORY_MAX_MB["broker"]),
        ],
    )
    secrets = paths(o.data_dir).secrets
    for name in ("retriever", "llm", "ingest", "gateway"):
        env = [
            f"Environment=LINESIDE_MQTT_USERNAME={name}",
            f"Environment=LINESIDE_MQTT_PASSWORD_FILE={secrets / f'{name}.password'}",
            f"Environment=LINESIDE_{name.upper()}_METRICS_PORT={service_port(o.metrics_port, name) if o.metrics_port else 0}",
            f"Environment=LINESIDE_{name.upper()}_METRICS_HOST={o.metrics_host}",
        ]
        if name == "llm":
            env += [f"Environment=LINESIDE_LLM_PROFILE={o.profile}", f"Environment=LINESIDE_LLM_MODEL_DIR={o.data_dir / 'models'}"]
        memory = LLM_MEMORY_MAX_MB[o.profile] if name == "llm" else MEMORY_MAX_MB[name]
        units[f"lineside-{name}.service"] = _unit(
            f"Lineside {name} service",
            ["network-online.target", BROKER_UNIT],
            [
                "Type=simple",
                f"ExecStart={o.python} -m services.{name}",
                # The broker unit writes the accounts' password files and this file before it starts Mosquitto.
                f"EnvironmentFile=-{o.data_dir / 'broker' / SERVICE_ENV}",
                *env,
                *_common(o, name, memory),
            ],
        )
    units[TARGET] = "\n".join(
        [
            "# Written by `lineside service install`.",
            "[Unit]",
            "Description=Lineside: the broker and the four services",
            "After=network-online.target",
            "Wants=network-online.target " + " ".join(n for n in units),
            "",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
    )
    units[TARGET] += "\n"
    return units


def install(units: dict[str, str], unit_dir: Path) -> list[Path]:
    """Write the units into ``unit_dir`` (``/etc/systemd/system``); the paths written."""
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in units.items():
            path = unit_dir / name
            path.write_text(text)
            written.append(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the units into {unit_dir}: {exc.strerror} (run as root, or --dry-run to print them)") from exc
    return written
