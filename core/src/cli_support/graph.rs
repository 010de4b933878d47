//! `anoflow graph`: the checked pipeline as Graphviz DOT or Mermaid.

use std::fmt::Write;

use crate::check::{edge_labels, CheckedPipeline};

fn node_label(p: &CheckedPipeline, i: usize) -> String {
    let n = &p.nodes[i];
    let fit = n.fit.as_ref().map(|f| format!(", fit: {f}")).unwrap_or_default();
    format!("{}\\n{} ({}{fit})", n.id, n.plugin(), n.kind().name())
}

pub fn dot(p: &CheckedPipeline) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];", p.spec.name);
    for (i, n) in p.nodes.iter().enumerate() {
        let shape = match n.kind() {
            anoflow_sdk::descriptor::StageKind::Source => ", shape=folder",
            anoflow_sdk::descriptor::StageKind::Sink => ", shape=note",
            anoflow_sdk::descriptor::StageKind::Fitted => ", style=\"rounded,bold\"",
            anoflow_sdk::descriptor::StageKind::Map => "",
        };
        let _ = writeln!(s, "  \"{}\" [label=\"{}\"{shape}];", n.id, node_label(p, i));
    }
    for ((from, to), labels) in edge_labels(p) {
        let _ = writeln!(s, "  \"{}\" -> \"{}\" [label=\"{}\"];", p.nodes[from].id, p.nodes[to].id, labels.join("\\n"));
    }
    s.push_str("}\n");
    s
}

pub fn mermaid(p: &CheckedPipeline) -> String {
    let mut s = String::from("flowchart LR\n");
    for (i, n) in p.nodes.iter().enumerate() {
        let label = node_label(p, i).replace("\\n", "<br/>");
        let _ = match n.kind() {
            anoflow_sdk::descriptor::StageKind::Source => writeln!(s, "  {}[(\"{label}\")]", n.id),
            anoflow_sdk::descriptor::StageKind::Sink => writeln!(s, "  {}[/\"{label}\"/]", n.id),
            _ => writeln!(s, "  {}[\"{label}\"]", n.id),
        };
    }
    for ((from, to), labels) in edge_labels(p) {
        let _ = writeln!(s, "  {} -->|\"{}\"| {}", p.nodes[from].id, labels.join("<br/>"), p.nodes[to].id);
    }
    s
}
