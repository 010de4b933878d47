//! A model cut down to the outputs a stage asks for.
//!
//! ONNX Runtime runs every node of a graph whatever outputs a run fetches, and a backbone
//! exported with its intermediate maps as outputs (MobileNetV2 up to its logits) has every
//! node live. Two maps from the middle of the network then pay for the whole tail: at 224 the
//! layers after `features.14.expand` are about 40 % of MobileNetV2's time. [`to_outputs`]
//! keeps the nodes the requested outputs depend on and drops the rest, with their weights;
//! the kept nodes are the same nodes on the same weights, so the outputs are the same bits.
//!
//! It works on the protobuf wire format directly (no schema): fields it does not edit are
//! copied byte for byte. It declines (returns `None`, and the model is opened as it is) when
//! it cannot be sure of the result: a graph with subgraphs (`If`, `Loop`: their bodies may
//! read any outer value), weights in external files (their paths are relative to the model
//! file), a requested name that is not a graph output, or bytes it cannot parse.

use std::collections::HashSet;

/// ModelProto.graph
const MODEL_GRAPH: u32 = 7;
/// GraphProto fields
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
/// NodeProto fields
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_ATTRIBUTE: u32 = 5;
/// AttributeProto fields holding subgraphs (`g`, `graphs`)
const ATTRIBUTE_GRAPH: u32 = 6;
const ATTRIBUTE_GRAPHS: u32 = 11;
/// TensorProto fields
const TENSOR_NAME: u32 = 8;
const TENSOR_DATA_LOCATION: u32 = 14;
const DATA_LOCATION_EXTERNAL: u64 = 1;
/// ValueInfoProto.name
const VALUE_INFO_NAME: u32 = 1;

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// One field of a message: its number, wire type, value (the content of a length-delimited
/// field, the encoded number otherwise) and every byte it spans, key included.
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u32,
    wire: u8,
    value: &'a [u8],
    raw: &'a [u8],
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The fields of one message, in order; `None` for bytes that are not a message.
fn fields(msg: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < msg.len() {
        let start = at;
        let key = varint(msg, &mut at)?;
        let (number, wire) = (u32::try_from(key >> 3).ok()?, (key & 7) as u8);
        let value = match wire {
            WIRE_VARINT => {
                let from = at;
                varint(msg, &mut at)?;
                &msg[from..at]
            }
            WIRE_I64 | WIRE_I32 => {
                let len = if wire == WIRE_I64 { 8 } else { 4 };
                let v = msg.get(at..at + len)?;
                at += len;
                v
            }
            WIRE_LEN => {
                let len = usize::try_from(varint(msg, &mut at)?).ok()?;
                let v = msg.get(at..at.checked_add(len)?)?;
                at += len;
                v
            }
            // Groups (3, 4) are not used by ONNX; anything else is not protobuf.
            _ => return None,
        };
        out.push(Field { number, wire, value, raw: &msg[start..at] });
    }
    Some(out)
}

/// The string fields numbered `number` of a message.
fn strings<'a>(msg: &[Field<'a>], number: u32) -> Option<Vec<&'a str>> {
    msg.iter().filter(|f| f.number == number && f.wire == WIRE_LEN).map(|f| std::str::from_utf8(f.value).ok()).collect()
}

/// The first string field numbered `number` of a message given as bytes.
fn name_of(msg: &[u8], number: u32) -> Option<&str> {
    let f = fields(msg)?;
    Some(strings(&f, number)?.first().copied().unwrap_or(""))
}

/// What a node reads and writes; `None` when it holds a subgraph.
fn node_io(node: &[u8]) -> Option<(Vec<&str>, Vec<&str>)> {
    let f = fields(node)?;
    for attribute in f.iter().filter(|a| a.number == NODE_ATTRIBUTE) {
        let a = fields(attribute.value)?;
        if a.iter().any(|x| x.number == ATTRIBUTE_GRAPH || x.number == ATTRIBUTE_GRAPHS) {
            return None;
        }
    }
    Some((strings(&f, NODE_INPUT)?, strings(&f, NODE_OUTPUT)?))
}

/// `model` (an ONNX ModelProto) with only what `keep` (graph outputs) depends on; `None` when
/// the model is left as it is (see the module doc), including when nothing would be dropped.
pub fn to_outputs(model: &[u8], keep: &[&str]) -> Option<Vec<u8>> {
    if keep.is_empty() {
        return None;
    }
    let top = fields(model)?;
    let graph_fields: Vec<&Field<'_>> = top.iter().filter(|f| f.number == MODEL_GRAPH).collect();
    let [graph] = graph_fields.as_slice() else { return None };
    let pruned = graph_to_outputs(graph.value, keep)?;
    let mut out = Vec::with_capacity(model.len());
    for f in &top {
        if f.number == MODEL_GRAPH {
            put_varint(u64::from(MODEL_GRAPH << 3 | u32::from(WIRE_LEN)), &mut out);
            put_varint(pruned.len() as u64, &mut out);
            out.extend_from_slice(&pruned);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Some(out)
}

fn graph_to_outputs(graph: &[u8], keep: &[&str]) -> Option<Vec<u8>> {
    let g = fields(graph)?;
    let outputs: Vec<&str> = g
        .iter()
        .filter(|f| f.number == GRAPH_OUTPUT)
        .map(|f| name_of(f.value, VALUE_INFO_NAME))
        .collect::<Option<_>>()?;
    if keep.iter().any(|k| !outputs.contains(k)) {
        return None;
    }
    let nodes: Vec<(Vec<&str>, Vec<&str>)> =
        g.iter().filter(|f| f.number == GRAPH_NODE).map(|f| node_io(f.value)).collect::<Option<_>>()?;
    let mut initializers = HashSet::new();
    for f in g.iter().filter(|f| f.number == GRAPH_INITIALIZER) {
        let t = fields(f.value)?;
        let external = t
            .iter()
            .any(|x| x.number == TENSOR_DATA_LOCATION && varint(x.value, &mut 0) == Some(DATA_LOCATION_EXTERNAL));
        if external {
            return None;
        }
        initializers.insert(strings(&t, TENSOR_NAME)?.first().copied().unwrap_or(""));
    }

    // Every value the kept outputs depend on. ONNX lists nodes in topological order, so one
    // pass from the end suffices; repeating until nothing changes also covers a file that
    // does not keep to that order.
    let mut needed: HashSet<&str> = keep.iter().copied().collect();
    let mut live = vec![false; nodes.len()];
    loop {
        let before = live.iter().filter(|&&l| l).count();
        for (i, (inputs, outs)) in nodes.iter().enumerate().rev() {
            if !live[i] && outs.iter().any(|o| needed.contains(o)) {
                live[i] = true;
                needed.extend(inputs.iter().copied().filter(|s| !s.is_empty()));
            }
        }
        if live.iter().filter(|&&l| l).count() == before {
            break;
        }
    }
    if live.iter().all(|&l| l) && outputs.len() == keep.len() {
        return None;
    }

    let mut out = Vec::with_capacity(graph.len());
    let mut node = 0;
    for f in &g {
        let kept = match f.number {
            GRAPH_NODE => {
                node += 1;
                live[node - 1]
            }
            GRAPH_INITIALIZER => needed.contains(name_of(f.value, TENSOR_NAME)?),
            // Data inputs stay (the caller feeds them by name); an initializer listed as an
            // input (older exports) goes with its initializer.
            GRAPH_INPUT => {
                let name = name_of(f.value, VALUE_INFO_NAME)?;
                !initializers.contains(name) || needed.contains(name)
            }
            GRAPH_OUTPUT => keep.contains(&name_of(f.value, VALUE_INFO_NAME)?),
            GRAPH_VALUE_INFO => needed.contains(name_of(f.value, VALUE_INFO_NAME)?),
            _ => true,
        };
        if kept {
            out.extend_from_slice(f.raw);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(number: u32, value: &[u8], out: &mut Vec<u8>) {
        put_varint(u64::from(number << 3 | u32::from(WIRE_LEN)), out);
        put_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }

    fn message(parts: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in parts {
            len_field(*n, v, &mut out);
        }
        out
    }

    fn node(inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let mut parts: Vec<(u32, Vec<u8>)> = inputs.iter().map(|s| (NODE_INPUT, s.as_bytes().to_vec())).collect();
        parts.extend(outputs.iter().map(|s| (NODE_OUTPUT, s.as_bytes().to_vec())));
        parts.push((4, b"Relu".to_vec()));
        message(&parts)
    }

    fn tensor(name: &str, external: bool) -> Vec<u8> {
        let mut t = message(&[(TENSOR_NAME, name.as_bytes().to_vec()), (9, vec![1, 2, 3, 4])]);
        if external {
            put_varint(u64::from(TENSOR_DATA_LOCATION << 3), &mut t);
            put_varint(DATA_LOCATION_EXTERNAL, &mut t);
        }
        t
    }

    fn value_info(name: &str) -> Vec<u8> {
        message(&[(VALUE_INFO_NAME, name.as_bytes().to_vec())])
    }

    /// x -> a -> b -> c, with w1 used by `a`, w3 by `c`; outputs a, b, c; ir_version before
    /// the graph and an opset import after it.
    fn chain(external: bool) -> Vec<u8> {
        let graph = message(&[
            (GRAPH_NODE, node(&["x", "w1"], &["a"])),
            (GRAPH_NODE, node(&["a"], &["b"])),
            (GRAPH_NODE, node(&["b", "w3"], &["c"])),
            (2, b"g".to_vec()),
            (GRAPH_INITIALIZER, tensor("w1", false)),
            (GRAPH_INITIALIZER, tensor("w3", external)),
            (GRAPH_INPUT, value_info("x")),
            (GRAPH_INPUT, value_info("w3")),
            (GRAPH_OUTPUT, value_info("a")),
            (GRAPH_OUTPUT, value_info("b")),
            (GRAPH_OUTPUT, value_info("c")),
            (GRAPH_VALUE_INFO, value_info("b")),
        ]);
        let mut model = vec![0x08, 0x07]; // ir_version: 7
        len_field(MODEL_GRAPH, &graph, &mut model);
        len_field(8, &message(&[(1, b"".to_vec())]), &mut model);
        model
    }

    fn graph_of(model: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let top = fields(model).unwrap();
        assert_eq!(top[0].raw, &[0x08, 0x07], "fields before the graph are copied");
        assert_eq!(top.last().unwrap().number, 8, "fields after the graph are copied");
        let g = top.iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        fields(g.value).unwrap().iter().map(|f| (f.number, f.value.to_vec())).collect()
    }

    #[test]
    fn keeps_what_the_outputs_need_and_drops_the_rest() {
        let pruned = to_outputs(&chain(false), &["b"]).expect("pruned");
        let g = graph_of(&pruned);
        let names = |n: u32, field: u32| -> Vec<String> {
            g.iter().filter(|(k, _)| *k == n).map(|(_, v)| name_of(v, field).unwrap().to_string()).collect()
        };
        assert_eq!(names(GRAPH_NODE, NODE_OUTPUT), ["a", "b"], "c is not needed for b");
        assert_eq!(names(GRAPH_INITIALIZER, TENSOR_NAME), ["w1"], "w3 goes with c");
        assert_eq!(names(GRAPH_INPUT, VALUE_INFO_NAME), ["x"], "the data input stays; w3's input entry goes");
        assert_eq!(names(GRAPH_OUTPUT, VALUE_INFO_NAME), ["b"]);
        assert_eq!(names(GRAPH_VALUE_INFO, VALUE_INFO_NAME), ["b"]);
        assert!(g.iter().any(|(k, v)| *k == 2 && v == b"g"), "the graph's other fields are copied");
        // Outputs in the file's order, whatever order they are asked for in.
        let both = to_outputs(&chain(false), &["b", "a"]).unwrap();
        let outs: Vec<String> = graph_of(&both)
            .iter()
            .filter(|(k, _)| *k == GRAPH_OUTPUT)
            .map(|(_, v)| name_of(v, 1).unwrap().to_string())
            .collect();
        assert_eq!(outs, ["a", "b"]);
    }

    #[test]
    fn declines_when_it_cannot_be_sure() {
        assert!(to_outputs(&chain(false), &["c", "a", "b"]).is_none(), "nothing to drop");
        assert!(to_outputs(&chain(false), &["nope"]).is_none(), "not an output: the caller's error names it");
        assert!(to_outputs(&chain(false), &[]).is_none());
        assert!(to_outputs(&chain(true), &["b"]).is_none(), "weights in an external file");
        assert!(to_outputs(b"\xff\xff\xff", &["b"]).is_none(), "not protobuf");
        let mut truncated = chain(false);
        truncated.truncate(truncated.len() - 3);
        assert!(to_outputs(&truncated, &["b"]).is_none(), "cut short");
        // A node with a subgraph attribute (an If's branch).
        let attribute = message(&[(1, b"then_branch".to_vec()), (ATTRIBUTE_GRAPH, message(&[]))]);
        let mut with_if = node(&["a"], &["d"]);
        len_field(NODE_ATTRIBUTE, &attribute, &mut with_if);
        let graph = message(&[
            (GRAPH_NODE, node(&["x"], &["a"])),
            (GRAPH_NODE, with_if),
            (GRAPH_OUTPUT, value_info("a")),
            (GRAPH_OUTPUT, value_info("d")),
        ]);
        let mut model = Vec::new();
        len_field(MODEL_GRAPH, &graph, &mut model);
        assert!(to_outputs(&model, &["a"]).is_none(), "subgraphs may read any outer value");
    }

    #[test]
    fn nodes_out_of_order_are_still_followed() {
        let graph = message(&[
            (GRAPH_NODE, node(&["b"], &["c"])),
            (GRAPH_NODE, node(&["a"], &["b"])),
            (GRAPH_NODE, node(&["x"], &["a"])),
            (GRAPH_NODE, node(&["x"], &["unused"])),
            (GRAPH_OUTPUT, value_info("c")),
            (GRAPH_OUTPUT, value_info("unused")),
        ]);
        let mut model = Vec::new();
        len_field(MODEL_GRAPH, &graph, &mut model);
        let pruned = to_outputs(&model, &["c"]).unwrap();
        let top = fields(&pruned).unwrap();
        let g = fields(top[0].value).unwrap();
        assert_eq!(g.iter().filter(|f| f.number == GRAPH_NODE).count(), 3);
    }
}
