"""Draw each stage's architecture from the synthesized app as a self-contained SVG (``make diagram``).

Columns, left to right: the stacks (with what each deploys after), the edge (internet, WAF, ALB), the
VPC's tiers, the node pools (from the stage config: instances, min/max, GPU sharing, taints) and the
workstation, the workloads (namespaces and Helm releases the templates apply) and the data stores (the
data stack's buckets, EFS, PostgreSQL and cache). Arrows follow requests and data: internet to WAF to
ALB into the public tier, the node tier to the pools, the pools to the workloads, the workloads to the
stores. Pure Python, no graphviz: the SVG is written by hand.

Usage: ``python -m scripts.diagram [cdk.out] [dist/diagrams] [docs/diagrams]``; the third argument
receives copies of the dev and prod diagrams (the README's).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape

from config.catalog import INSTANCE_TYPES
from config.loader import load_stages
from config.model import Mig, NodePoolConfig, StageConfig, TimeSlicing
from platform_constructs.template_manifests import render, template_helm_releases, template_objects

COLUMN_WIDTH: Final = 250
COLUMN_GAP: Final = 70
MARGIN: Final = 24
TITLE_HEIGHT: Final = 64
HEADER_HEIGHT: Final = 26
LINE_HEIGHT: Final = 15
BOX_GAP: Final = 14
BOX_PADDING: Final = 8
# Characters per line at 11 px in the box width (a conservative average glyph width of 6.4 px).
CHARS_PER_LINE: Final = int((COLUMN_WIDTH - 2 * BOX_PADDING) / 6.4)
# AWS's managed rule groups all start with this; the rest of the name says what the group does.
MANAGED_RULES_PREFIX: Final = "AWSManagedRules"
README_STAGES: Final = ("dev", "prod")

# Fill and stroke per kind of box.
STYLES: Final = {
    "stack": ("#f3f4f6", "#6b7280"),
    "edge": ("#fff7ed", "#ea580c"),
    "network": ("#eff6ff", "#2563eb"),
    "pool": ("#f0fdf4", "#16a34a"),
    "gpu": ("#faf5ff", "#9333ea"),
    "workload": ("#f0fdfa", "#0d9488"),
    "data": ("#fffbeb", "#d97706"),
}


@dataclass(frozen=True)
class StackView:
    """One synthesized stack of a stage: its construct ID, template and the stacks it deploys after."""

    name: str
    template: Mapping[str, Any]
    depends_on: tuple[str, ...] = ()


@dataclass
class Box:
    key: str
    title: str
    lines: list[str]
    style: str
    x: float = 0
    y: float = 0
    width: float = COLUMN_WIDTH

    @property
    def wrapped(self) -> list[str]:
        out: list[str] = []
        for line in self.lines:
            out.extend(_wrap(line, CHARS_PER_LINE))
        return out

    @property
    def height(self) -> float:
        return BOX_PADDING * 2 + LINE_HEIGHT * (1 + len(self.wrapped))


@dataclass(frozen=True)
class Arrow:
    """A flow from one box to another, with an optional label at its middle."""

    source: str
    target: str
    label: str = ""


@dataclass
class Column:
    title: str
    boxes: list[Box] = field(default_factory=list)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(" "), [], ""
    for word in words:
        while len(word) > width:  # a long name (a bucket) breaks where it must
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines or [""]


def _resources(stacks: Sequence[StackView], cfn_type: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for stack in stacks:
        for resource in stack.template.get("Resources", {}).values():
            if resource.get("Type") == cfn_type:
                found.append((stack.name, resource.get("Properties", {})))
    return found


def _service(endpoint: Mapping[str, Any]) -> str:
    """Return an endpoint's service without ``com.amazonaws.<region>.`` (``ecr.api``, ``s3``)."""
    return ".".join(render(endpoint.get("ServiceName", "")).split(".")[3:])


def _pool_box(pool: NodePoolConfig) -> Box:
    gpu = any(INSTANCE_TYPES[t].gpu for t in pool.instance_types)
    sharing = pool.gpu_sharing
    if isinstance(sharing, TimeSlicing):
        shared = f"GPU time-slicing x{sharing.replicas}"
    elif isinstance(sharing, Mig):
        shared = f"GPU MIG, layout {sharing.layout}"
    else:
        shared = "whole GPUs" if gpu else "no GPU"
    size = f"{pool.min_nodes}-{pool.max_nodes} nodes"
    if pool.peak is not None:
        size += f" (+{pool.peak.extra_nodes} {pool.peak.start_hour_utc:02d}-{pool.peak.end_hour_utc:02d} UTC)"
    lines = [
        f"{pool.provisioner}, {'/'.join(pool.capacity_types)}",
        ", ".join(pool.instance_types),
        f"{size}; {shared}",
        f"serves: {', '.join(pool.workload_types)}",
    ]
    if pool.taints:
        lines.append("taints: " + ", ".join(f"{t.key}={t.value}:{t.effect}" for t in pool.taints))
    return Box(f"pool:{pool.name}", pool.name, lines, "gpu" if gpu else "pool")


def _stack_column(stacks: Sequence[StackView]) -> Column:
    column = Column("Stacks")
    for stack in stacks:
        lines = [f"{len(stack.template.get('Resources', {}))} resources"]
        if stack.depends_on:
            lines.append("after " + ", ".join(stack.depends_on))
        column.boxes.append(Box(f"stack:{stack.name}", stack.name, lines, "stack"))
    return column


def _edge_column(config: StageConfig, stacks: Sequence[StackView], arrows: list[Arrow]) -> Column:
    column = Column("Edge")
    acls = _resources(stacks, "AWS::WAFv2::WebACL")
    balancers = _resources(stacks, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    albs = [p for _, p in balancers if p.get("Type", "application") == "application"]
    if acls or albs:
        column.boxes.append(Box("internet", "Internet", ["clients of the inference API"], "edge"))
    previous = "internet"
    for _, acl in acls:
        rules = [str(r.get("Name", "?")).removeprefix(MANAGED_RULES_PREFIX) for r in acl.get("Rules", [])]
        column.boxes.append(Box("waf", "WAF web ACL", [f"{len(rules)} rules: {', '.join(rules)}"], "edge"))
        arrows.append(Arrow(previous, "waf", "HTTPS"))
        previous = "waf"
    for index, alb in enumerate(albs):
        lines = [str(alb.get("Scheme", "internet-facing"))]
        if config.edge.domain_name:
            lines.append(f"https://{config.edge.domain_name}")
        key = f"alb:{index}"
        column.boxes.append(Box(key, "Application Load Balancer", lines, "edge"))
        arrows.append(Arrow(previous, key))
        arrows.append(Arrow(key, "tier:public"))
    return column


def _vpc_column(config: StageConfig, stacks: Sequence[StackView], arrows: list[Arrow]) -> Column:
    net = config.network
    nat = len(_resources(stacks, "AWS::EC2::NatGateway"))
    endpoints = _resources(stacks, "AWS::EC2::VPCEndpoint")
    interface = [_service(p) for _, p in endpoints if p.get("VpcEndpointType") == "Interface"]
    gateway = [_service(p) for _, p in endpoints if p.get("VpcEndpointType") == "Gateway"]
    zones = ", ".join(config.availability_zones)
    column = Column(f"VPC {net.vpc_cidr}")
    public = [", ".join(net.public_subnets), f"{nat} NAT gateway(s), ALB"]
    nodes = [", ".join(net.node_subnets), f"zones {zones}"]
    isolated = [", ".join(net.data_subnets), "PostgreSQL, cache"]
    column.boxes = [
        Box("tier:public", "Public subnets", public, "network"),
        Box("tier:nodes", "Node subnets (private)", nodes, "network"),
        Box("tier:data", "Data subnets (isolated)", isolated, "network"),
        Box(
            "tier:endpoints",
            "VPC endpoints",
            [f"gateway: {', '.join(gateway) or 'none'}", f"interface: {', '.join(interface) or 'none'}"],
            "network",
        ),
    ]
    arrows.append(Arrow("tier:nodes", "tier:public", "egress via NAT"))
    return column


def _pool_column(config: StageConfig, stacks: Sequence[StackView], arrows: list[Arrow]) -> Column:
    column = Column("Node pools")
    if _resources(stacks, "AWS::EKS::Cluster"):
        for pool in config.cluster.node_pools:
            box = _pool_box(pool)
            column.boxes.append(box)
            arrows.append(Arrow("tier:nodes", box.key))
    for _, instance in _resources(stacks, "AWS::EC2::Instance"):
        lines = [f"{instance.get('InstanceType')}, SSM Session Manager", "JupyterLab, TensorBoard"]
        column.boxes.append(Box("workstation", "ML workstation (EC2)", lines, "pool"))
        arrows.append(Arrow("tier:nodes", "workstation"))
    return column


def _workload_column(stacks: Sequence[StackView]) -> Column:
    column = Column("Workloads")
    namespaces = sorted(
        {
            str(obj["metadata"]["name"])
            for stack in stacks
            for _, obj in template_objects(stack.template)
            if obj.get("kind") == "Namespace" and "name" in obj.get("metadata", {})
        }
    )
    releases = sorted(
        (str(p.get("Namespace", "default")), str(p["Chart"]), str(p.get("Version", "")))
        for stack in stacks
        for _, p in template_helm_releases(stack.template)
    )
    if namespaces:
        title = f"Namespaces ({len(namespaces)})"
        column.boxes.append(Box("namespaces", title, [", ".join(namespaces)], "workload"))
    if releases:
        lines = [f"{chart} {version} ({namespace})" for namespace, chart, version in releases]
        column.boxes.append(Box("releases", f"Helm releases ({len(releases)})", lines, "workload"))
    return column


def _data_column(config: StageConfig, stacks: Sequence[StackView]) -> Column:
    column = Column("Data stores")
    data = [s for s in stacks if s.name == "Data"]
    for _, bucket in _resources(data, "AWS::S3::Bucket"):
        name = render(bucket.get("BucketName", "bucket"))
        versioned = bucket.get("VersioningConfiguration", {}).get("Status") == "Enabled"
        column.boxes.append(
            Box(f"bucket:{name}", "S3 bucket", [name, "KMS, versioned" if versioned else "KMS"], "data")
        )
    paths = sorted(
        render(point.get("RootDirectory", {}).get("Path", "/"))
        for _, point in _resources(data, "AWS::EFS::AccessPoint")
    )
    for _, fs in _resources(data, "AWS::EFS::FileSystem"):
        tags = {t.get("Key"): render(t.get("Value")) for t in fs.get("FileSystemTags", [])}
        lines = [tags.get("Name", "EFS"), f"access points: {', '.join(paths)}"]
        column.boxes.append(Box("efs", "EFS file system", lines, "data"))
    for _, db in _resources(data, "AWS::RDS::DBInstance"):
        multi_az = "Multi-AZ" if str(db.get("MultiAZ", False)).lower() == "true" else "single-AZ"
        storage = f"{db.get('AllocatedStorage')} GiB {db.get('StorageType', '')}"
        engine = f"PostgreSQL {db.get('EngineVersion', '')}, {storage}"
        lines = [f"{db.get('DBInstanceClass')}, {multi_az}", engine]
        column.boxes.append(Box("rds", "PostgreSQL (RDS)", lines, "data"))
    for _, group in _resources(data, "AWS::ElastiCache::ReplicationGroup"):
        shards = int(group.get("NumNodeGroups", 1))
        replicas = int(group.get("ReplicasPerNodeGroup", 0))
        lines = [f"{shards} shard(s) x (1 + {replicas} replica(s))", str(group.get("CacheNodeType"))]
        column.boxes.append(Box("cache", f"Cache ({group.get('Engine', 'redis')})", lines, "data"))
    replica = [s for s in stacks if s.name == "Replica"]
    if replica:
        names = [render(p.get("BucketName", "")) for _, p in _resources(replica, "AWS::S3::Bucket")]
        region = config.data.buckets.replication_region or ""
        column.boxes.append(Box("replica", f"Replica buckets ({region})", names, "data"))
    return column


def build_columns(config: StageConfig, stacks: Sequence[StackView]) -> tuple[list[Column], list[Arrow]]:
    """Return the diagram's columns (empty ones left out) and its arrows between box keys."""
    arrows: list[Arrow] = []
    stack_column = _stack_column(stacks)
    edge = _edge_column(config, stacks, arrows)
    vpc = _vpc_column(config, stacks, arrows)
    pools = _pool_column(config, stacks, arrows)
    workloads = _workload_column(stacks)
    data = _data_column(config, stacks)
    # Pods of every pool run the workloads; the workloads read and write the stores.
    if workloads.boxes:
        first, last = workloads.boxes[0].key, workloads.boxes[-1].key
        arrows.extend(Arrow(box.key, first) for box in pools.boxes if box.key.startswith("pool:"))
        arrows.extend(Arrow(last, box.key) for box in data.boxes)
    columns = [c for c in (stack_column, edge, vpc, pools, workloads, data) if c.boxes]
    return columns, arrows


def _layout(columns: list[Column]) -> tuple[float, float]:
    x = float(MARGIN)
    height = 0.0
    for column in columns:
        y = float(TITLE_HEIGHT + HEADER_HEIGHT + MARGIN)
        for box in column.boxes:
            box.x, box.y = x, y
            y += box.height + BOX_GAP
        height = max(height, y)
        x += COLUMN_WIDTH + COLUMN_GAP
    return x - COLUMN_GAP + MARGIN, height + MARGIN


def _arrow(source: Box, target: Box, label: str, same_column: bool) -> str:
    if same_column:
        # Same column: straight down (or up) between the facing edges.
        x = source.x + source.width / 2
        if target.y > source.y:
            y1, y2 = source.y + source.height, target.y
        else:
            y1, y2 = source.y, target.y + target.height
        path = f'<path class="arrow" d="M {x:.1f} {y1:.1f} L {x:.1f} {y2:.1f}"/>'
        label_x, label_y = x + 6, (y1 + y2) / 2 + 4
    else:
        x1, y1 = source.x + source.width, source.y + source.height / 2
        x2, y2 = target.x, target.y + target.height / 2
        if x2 < x1:  # a target left of its source: leave from the left edge, enter from the right
            x1, x2 = source.x, target.x + target.width
        bend = (x2 - x1) / 2
        path = (
            f'<path class="arrow" d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, '
            f'{x2 - bend:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"/>'
        )
        label_x, label_y = (x1 + x2) / 2 + 4, (y1 + y2) / 2 - 4
    if not label:
        return path
    return path + f'\n<text class="label" x="{label_x:.1f}" y="{label_y:.1f}">{escape(label)}</text>'


def render_svg(title: str, subtitle: str, columns: list[Column], arrows: Sequence[Arrow]) -> str:
    """Return the SVG document of laid-out columns, boxes and arrows."""
    width, height = _layout(columns)
    boxes = {box.key: box for column in columns for box in column.boxes}
    column_of = {box.key: i for i, column in enumerate(columns) for box in column.boxes}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(title)}</title>",
        "<defs>",
        '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#475569"/></marker>',
        "<style>.arrow{fill:none;stroke:#475569;stroke-width:1.2;marker-end:url(#head);opacity:0.75}"
        ".title{font-size:20px;font-weight:bold;fill:#111827}.subtitle{font-size:12px;fill:#374151}"
        ".header{font-size:14px;font-weight:bold;fill:#111827}.name{font-size:12px;font-weight:bold;fill:#111827}"
        ".line{font-size:11px;fill:#1f2937}"
        ".label{font-size:10px;font-style:italic;fill:#475569}</style>",
        "</defs>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text class="title" x="{MARGIN}" y="{MARGIN + 10}">{escape(title)}</text>',
        f'<text class="subtitle" x="{MARGIN}" y="{MARGIN + 30}">{escape(subtitle)}</text>',
    ]
    for column in columns:
        x = column.boxes[0].x
        header_y = TITLE_HEIGHT + MARGIN
        out.append(f'<text class="header" x="{x:.0f}" y="{header_y:.0f}">{escape(column.title)}</text>')
    for arrow in arrows:
        if arrow.source in boxes and arrow.target in boxes:
            same_column = column_of[arrow.source] == column_of[arrow.target]
            out.append(_arrow(boxes[arrow.source], boxes[arrow.target], arrow.label, same_column))
    for box in boxes.values():
        fill, stroke = STYLES[box.style]
        out.append(f'<g id="{escape(box.key, {chr(34): "&quot;"})}">')
        out.append(
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.0f}" height="{box.height:.0f}" '
            f'rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
        )
        text_x = box.x + BOX_PADDING
        baseline = box.y + BOX_PADDING + 11
        out.append(f'<text class="name" x="{text_x:.1f}" y="{baseline:.1f}">{escape(box.title)}</text>')
        for i, line in enumerate(box.wrapped, start=1):
            line_y = baseline + i * LINE_HEIGHT
            out.append(f'<text class="line" x="{text_x:.1f}" y="{line_y:.1f}">{escape(line)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def stage_svg(config: StageConfig, stacks: Sequence[StackView]) -> str:
    """Return one stage's architecture diagram as an SVG document."""
    columns, arrows = build_columns(config, stacks)
    title = f"{config.project} {config.stage}: architecture"
    subtitle = (
        f"account {config.account}, {config.region} ({', '.join(config.availability_zones)}); "
        f"EKS {config.cluster.kubernetes_version}; generated from the synthesized templates by make diagram"
    )
    return render_svg(title, subtitle, columns, arrows)


def stage_views(assembly: Any, stage: str) -> list[StackView]:
    """Return one stage's stacks from a ``CloudAssembly``, with the stacks each deploys after."""
    stacks = [s for s in assembly.stacks if s.stage.lower() == stage.lower()]
    if not stacks:
        return []
    manifest = json.loads((stacks[0].template_path.parent / "manifest.json").read_text())
    names = {s.artifact_id: s.construct_id for s in stacks}
    views = []
    for s in stacks:
        dependencies = manifest["artifacts"][s.artifact_id].get("dependencies", [])
        after = tuple(names[d] for d in dependencies if d in names)
        views.append(StackView(s.construct_id, s.template, after))
    return views


def main(outdir: str = "cdk.out", dist: str = "dist/diagrams", docs: str | None = None) -> int:
    from tests.support.assembly import CloudAssembly  # the one cdk.out reader (scripts/synth_summary.py too)

    assembly = CloudAssembly(Path(outdir))
    target = Path(dist)
    target.mkdir(parents=True, exist_ok=True)
    synthesized = {stage.lower() for stage in assembly.stages}
    for config in load_stages():
        if config.stage not in synthesized:
            continue
        path = target / f"{config.stage}.svg"
        path.write_text(stage_svg(config, stage_views(assembly, config.stage)))
        print(f"{path}")
        if docs is not None and config.stage in README_STAGES:
            Path(docs).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(docs) / path.name)
            print(f"{Path(docs) / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
