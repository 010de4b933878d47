//! A YAML tree that remembers where every key and value came from, so that every
//! validation error can point at `file:line:column`.

use std::collections::HashMap;

use serde_json::Value as Json;
use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, ScanError, TScalarStyle},
    Yaml,
};

/// A 1-based line and column in the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_marker(m: Marker) -> Self {
        Self { line: m.line(), col: m.col() + 1 }
    }
}

#[derive(Debug, Clone)]
pub struct Key {
    pub text: String,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum Node {
    Scalar { value: Json, pos: Pos },
    Seq { items: Vec<Node>, pos: Pos },
    Map { entries: Vec<(Key, Node)>, pos: Pos },
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq { pos, .. } | Node::Map { pos, .. } => *pos,
        }
    }

    /// The value as JSON (mapping keys become strings).
    pub fn to_json(&self) -> Json {
        match self {
            Node::Scalar { value, .. } => value.clone(),
            Node::Seq { items, .. } => Json::Array(items.iter().map(Node::to_json).collect()),
            Node::Map { entries, .. } => {
                Json::Object(entries.iter().map(|(k, v)| (k.text.clone(), v.to_json())).collect())
            }
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value: Json::String(s), .. } => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match self {
            Node::Map { entries, .. } => Some(entries),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar { value: Json::Null, .. } => "null",
            Node::Scalar { value: Json::String(_), .. } => "a string",
            Node::Scalar { value: Json::Bool(_), .. } => "a bool",
            Node::Scalar { .. } => "a number",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }
}

/// A YAML syntax error, or a structure this loader refuses (duplicate keys, non-scalar keys).
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The value of a plain (unquoted) scalar, resolved as YAML does (int, float, bool, null).
pub fn resolve_plain(text: &str) -> Json {
    match Yaml::from_str(text) {
        Yaml::Integer(i) => Json::from(i),
        Yaml::Real(r) => {
            r.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Json::String(r), Json::Number)
        }
        Yaml::Boolean(b) => Json::Bool(b),
        Yaml::Null => Json::Null,
        _ => Json::String(text.to_string()),
    }
}

enum Frame {
    Seq { items: Vec<Node>, pos: Pos, anchor: usize },
    Map { entries: Vec<(Key, Node)>, pending_key: Option<Key>, pos: Pos, anchor: usize },
}

/// Most nodes that aliases may add to a document: a pipeline file needs a handful, while a
/// "billion laughs" file (aliases of aliases) would otherwise expand exponentially and
/// exhaust memory.
const MAX_ALIAS_NODES: usize = 100_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Each anchored node with its size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes added by aliases so far.
    alias_nodes: usize,
    error: Option<YamlError>,
}

fn node_count(node: &Node) -> usize {
    match node {
        Node::Scalar { .. } => 1,
        Node::Seq { items, .. } => 1 + items.iter().map(node_count).sum::<usize>(),
        Node::Map { entries, .. } => 1 + entries.iter().map(|(_, v)| 1 + node_count(v)).sum::<usize>(),
    }
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { pos, message });
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = node_count(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, pending_key, .. }) => match pending_key.take() {
                Some(key) => {
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.text == key.text) {
                        let (line, col) = (first.pos.line, first.pos.col);
                        self.fail(
                            key.pos,
                            format!("duplicate key `{}` (first defined at line {line}, column {col})", key.text),
                        );
                        return;
                    }
                    entries.push((key, node));
                }
                None => {
                    let pos = node.pos();
                    match node {
                        Node::Scalar { value, .. } => {
                            let text = match value {
                                Json::String(s) => s,
                                other => other.to_string(),
                            };
                            *pending_key = Some(Key { text, pos });
                        }
                        _ => self.fail(pos, "mapping keys must be plain scalars".to_string()),
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from_marker(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain { resolve_plain(&text) } else { Json::String(text) };
                self.push_value(Node::Scalar { value, pos }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq { items: Vec::new(), pos, anchor }),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map { entries: Vec::new(), pending_key: None, pos, anchor })
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { items, pos, anchor }) => self.push_value(Node::Seq { items, pos }, anchor),
                Some(Frame::Map { entries, pos, anchor, .. }) => self.push_value(Node::Map { entries, pos }, anchor),
                None => self.fail(pos, "unbalanced collection end".to_string()),
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((_, size)) if self.alias_nodes + size > MAX_ALIAS_NODES => self.fail(
                    pos,
                    format!("aliases expand to more than {MAX_ALIAS_NODES} nodes; write the values out or use fewer aliases"),
                ),
                Some((node, size)) => {
                    let node = node.clone();
                    self.alias_nodes += size;
                    self.push_value(node, 0)
                }
                None => self.fail(pos, "alias to an unknown anchor".to_string()),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

/// The byte-order mark some editors put at the start of a UTF-8 file.
const BOM: char = '\u{feff}';

/// Parses one YAML document. An empty document is `None`.
///
/// A leading byte-order mark is skipped. A NUL character is an error (the YAML scanner would
/// take it for the end of the text and drop everything after it), and so is a second
/// document after `---` (it would be ignored). The scanner stops at the first syntax error,
/// so only that one is reported; it carries its line and column.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let text = text.strip_prefix(BOM).unwrap_or(text);
    if let Some(at) = text.find('\0') {
        return Err(YamlError {
            pos: pos_of_byte(text, at),
            message: "NUL character: a pipeline file is text, and everything after a NUL would be lost".into(),
        });
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let syntax = |e: ScanError| YamlError { pos: Pos::from_marker(*e.marker()), message: e.info().to_string() };
    parser.load(&mut builder, false).map_err(syntax)?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    match parser.peek().map_err(syntax)? {
        (Event::StreamEnd, _) => Ok(builder.root),
        (_, mark) => Err(YamlError {
            pos: Pos::from_marker(*mark),
            message: "a second YAML document starts here (after `---`); a pipeline file holds one document".into(),
        }),
    }
}

/// The 1-based line and column (in characters) of byte offset `at` in `text`.
fn pos_of_byte(text: &str, at: usize) -> Pos {
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos { line: before.matches('\n').count() + 1, col: before[line_start..].chars().count() + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let text = "name: x\nnodes:\n  a: { plugin: p, with: { k: 3, s: '3', f: 0.5, b: true } }\n";
        let root = parse(text).unwrap().unwrap();
        let entries = root.entries().unwrap();
        assert_eq!(entries[1].0.text, "nodes");
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let a = &entries[1].1.entries().unwrap()[0];
        assert_eq!(a.0.pos, Pos { line: 3, col: 3 });
        let json = root.to_json();
        assert_eq!(json["nodes"]["a"]["with"], serde_json::json!({"k": 3, "s": "3", "f": 0.5, "b": true}));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("nodes:\n  a: 1\n  a: 2\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, col: 3 });
        assert!(err.message.contains("duplicate key `a` (first defined at line 2, column 3)"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("aliases expand to more than"), "{err:?}");
        assert!(err.pos.line >= 5, "{err:?}");
    }

    #[test]
    fn a_nul_character_is_an_error_at_its_position() {
        let err = parse("name: v\nnodes:\n  a: { plugin: x }\u{0}\n  b: { plugin: y }\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, col: 19 }, "{err:?}");
        assert!(err.message.contains("NUL character"), "{err:?}");
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let root = parse("\u{feff}name: v\nnodes: {}\n").unwrap().unwrap();
        let entries = root.entries().unwrap();
        assert_eq!(entries[0].0.text, "name");
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
    }

    #[test]
    fn a_second_document_is_an_error_at_its_start() {
        let err = parse("name: v\nnodes: {}\n---\nname: w\n").unwrap_err();
        assert_eq!(err.pos.line, 3, "{err:?}");
        assert!(err.message.contains("second YAML document"), "{err:?}");
        // An explicit start or end marker around the only document is fine.
        assert!(parse("---\nname: v\n...\n").unwrap().is_some());
        assert!(parse("name: v\n---\n").is_err(), "an empty second document is still a second document");
    }

    #[test]
    fn aliases_are_expanded() {
        let json = parse("x: &v { a: 1 }\ny: *v\n").unwrap().unwrap().to_json();
        assert_eq!(json["y"]["a"], 1);
    }
}
