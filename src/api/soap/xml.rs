//! A small XML tree for SOAP messages: a hardened reader and a writer.
//!
//! The reader takes UTF-8 only and refuses what a register has no use for and attackers love:
//! DOCTYPE (so no entity declarations, no external entities, no expansion bombs), processing
//! instructions (forbidden in SOAP anyway), undefined entities, deep nesting and huge element
//! counts. The body size is bounded before it gets here.

use std::fmt::Write as _;

use quick_xml::NsReader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

/// Deeper than any message of the schema needs (envelope, body, request, period, date: 5).
pub const MAX_DEPTH: usize = 32;
pub const MAX_ELEMENTS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the message is not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("only UTF-8 is accepted, the declaration says {0:?}")]
    Encoding(String),
    #[error("DOCTYPE and entity declarations are not accepted")]
    DocType,
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("elements are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the message has more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("&{0}; is not a predefined entity")]
    UnknownEntity(String),
    #[error("the prefix {0:?} is not bound to a namespace")]
    UnboundPrefix(String),
    #[error("element {0} mixes text and child elements")]
    MixedContent(String),
    #[error("character U+{0:04X} is not allowed in XML")]
    ForbiddenCharacter(u32),
    #[error("there is text outside the document element")]
    TextOutsideRoot,
    #[error("there is more than one document element")]
    SeveralRoots,
    #[error("there is no document element")]
    NoRoot,
    #[error("malformed XML near byte {position}: {reason}")]
    Syntax { position: u64, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub ns: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The namespace name the element's prefix (or the default namespace) resolves to.
    pub ns: Option<String>,
    pub name: String,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Element>,
    /// Character data of a leaf element (CDATA and references resolved).
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    /// `ns:name` as the reader would recognise it, for messages.
    pub fn qualified(&self) -> String {
        match &self.ns {
            Some(ns) => format!("{{{ns}}}{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// XML 1.0's `Char`: a reply echoing anything else would not be XML.
fn allowed(text: &str) -> Result<&str, XmlError> {
    match text
        .chars()
        .find(|&c| !matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..))
    {
        Some(c) => Err(XmlError::ForbiddenCharacter(u32::from(c))),
        None => Ok(text),
    }
}

fn syntax(reader: &NsReader<&[u8]>, e: impl std::fmt::Display) -> XmlError {
    XmlError::Syntax {
        position: reader.error_position(),
        reason: e.to_string(),
    }
}

fn namespace(result: ResolveResult<'_>) -> Result<Option<String>, XmlError> {
    match result {
        ResolveResult::Bound(ns) => Ok(Some(ns.0.to_string())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => Err(XmlError::UnboundPrefix(prefix)),
    }
}

fn element(
    reader: &NsReader<&[u8]>,
    ns: Option<String>,
    start: &BytesStart<'_>,
) -> Result<Element, XmlError> {
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| syntax(reader, e))?;
        let key = attribute.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let (attr_ns, local) = reader.resolver().resolve_attribute(key);
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| syntax(reader, e))?;
        attributes.push(Attribute {
            ns: namespace(attr_ns)?,
            name: AsRef::<str>::as_ref(&local).to_string(),
            value: allowed(&value)?.to_string(),
        });
    }
    Ok(Element {
        ns,
        name: AsRef::<str>::as_ref(&start.local_name()).to_string(),
        attributes,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Parses a whole document into its document element.
pub fn parse(bytes: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(bytes).map_err(|e| XmlError::NotUtf8(e.valid_up_to()))?;
    let mut reader = NsReader::from_reader(text.as_bytes());
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let position = reader.buffer_position();
        let (resolved, event) = reader.read_resolved_event().map_err(|e| XmlError::Syntax {
            position,
            reason: e.to_string(),
        })?;
        let ns = match &event {
            Event::Start(_) | Event::Empty(_) => namespace(resolved)?,
            _ => None,
        };
        match event {
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(|e| syntax(&reader, e))?;
                    if !encoding.eq_ignore_ascii_case("utf-8") {
                        return Err(XmlError::Encoding(encoding.into_owned()));
                    }
                }
            }
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::Comment(_) => {}
            Event::Start(start) | Event::Empty(start) if stack.len() >= MAX_DEPTH => {
                let _ = start;
                return Err(XmlError::TooDeep);
            }
            Event::Start(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                stack.push(element(&reader, ns, &start)?);
            }
            Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                let done = element(&reader, ns, &start)?;
                close(&mut stack, &mut root, done)?;
            }
            Event::End(_) => {
                // Names were matched by the reader (check_end_names).
                let done = stack.pop().ok_or_else(|| XmlError::Syntax {
                    position: reader.buffer_position(),
                    reason: "closing tag without an opening one".into(),
                })?;
                close(&mut stack, &mut root, done)?;
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                allowed(&content)?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(XmlError::TextOutsideRoot),
                }
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                allowed(&content)?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&content),
                    None => return Err(XmlError::TextOutsideRoot),
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| syntax(&reader, e))? {
                    Some(ch) => ch.to_string(),
                    None => {
                        let name = r.xml10_content();
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| XmlError::UnknownEntity(name.to_string()))?
                            .to_string()
                    }
                };
                allowed(&resolved)?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&resolved),
                    None => return Err(XmlError::TextOutsideRoot),
                }
            }
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(XmlError::Syntax {
                        position: reader.buffer_position(),
                        reason: "the document ends inside an element".into(),
                    });
                }
                return root.ok_or(XmlError::NoRoot);
            }
        }
    }
}

fn close(stack: &mut [Element], root: &mut Option<Element>, done: Element) -> Result<(), XmlError> {
    if !done.children.is_empty() && !done.text.trim().is_empty() {
        return Err(XmlError::MixedContent(done.qualified()));
    }
    match stack.last_mut() {
        Some(parent) => parent.children.push(done),
        None if root.is_some() => return Err(XmlError::SeveralRoots),
        None => *root = Some(done),
    }
    Ok(())
}

/// Builds a document as text; every name is written as given (prefixed), every text escaped.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        }
    }

    /// A part of a document, to be embedded with [`Writer::append`].
    pub fn fragment() -> Writer {
        Writer { out: String::new() }
    }

    pub fn append(&mut self, fragment: Writer) -> &mut Writer {
        self.out.push_str(&fragment.out);
        self
    }

    /// Opens `name` with namespace declarations or other attributes.
    pub fn open_with(&mut self, name: &str, attributes: &[(&str, &str)]) -> &mut Writer {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attributes {
            let _ = write!(self.out, " {key}=\"{}\"", escape(*value));
        }
        self.out.push('>');
        self
    }

    pub fn open(&mut self, name: &str) -> &mut Writer {
        self.open_with(name, &[])
    }

    pub fn close(&mut self, name: &str) -> &mut Writer {
        let _ = write!(self.out, "</{name}>");
        self
    }

    pub fn leaf(&mut self, name: &str, text: impl std::fmt::Display) -> &mut Writer {
        let text = text.to_string();
        let _ = write!(self.out, "<{name}>{}</{name}>", escape(text.as_str()));
        self
    }

    pub fn text(&mut self, text: &str) -> &mut Writer {
        self.out.push_str(&escape(text));
        self
    }

    pub fn leaf_opt<T: std::fmt::Display>(&mut self, name: &str, text: Option<T>) -> &mut Writer {
        if let Some(text) = text {
            self.leaf(name, text);
        }
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_text_and_references_are_resolved() {
        let doc = br#"<?xml version="1.0" encoding="utf-8"?>
            <!-- a comment -->
            <a:root xmlns:a="urn:a" xmlns="urn:d" a:x="1 &amp; 2">
              <child>x &lt; y &#x41;<![CDATA[<raw>]]></child>
              <a:empty/>
            </a:root>"#;
        let root = parse(doc).unwrap();
        assert!(root.is("urn:a", "root"));
        assert_eq!(root.attribute("x"), Some("1 & 2"));
        assert_eq!(root.children.len(), 2);
        assert!(root.children[0].is("urn:d", "child"));
        assert_eq!(root.children[0].text, "x < y A<raw>");
        assert!(root.children[1].is("urn:a", "empty"));
    }

    #[test]
    fn hostile_documents_are_refused_with_the_reason() {
        let cases: [(&[u8], XmlError); 12] = [
            (
                b"<!DOCTYPE x [<!ENTITY e \"boom\">]><x>&e;</x>",
                XmlError::DocType,
            ),
            (b"<x>&e;</x>", XmlError::UnknownEntity("e".into())),
            (
                b"<?xml-stylesheet href=\"a\"?><x/>",
                XmlError::ProcessingInstruction,
            ),
            (b"<x>\xff</x>", XmlError::NotUtf8(3)),
            (
                b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><x/>",
                XmlError::Encoding("ISO-8859-1".into()),
            ),
            (b"<p:x/>", XmlError::UnboundPrefix("p".into())),
            (b"<x><y/>text</x>", XmlError::MixedContent("x".into())),
            (b"<x/><y/>", XmlError::SeveralRoots),
            (b"  ", XmlError::NoRoot),
            (b"<x>&#x1;</x>", XmlError::ForbiddenCharacter(1)),
            (b"<x>\x02</x>", XmlError::ForbiddenCharacter(2)),
            (b"<x a=\"&#xFFFF;\"/>", XmlError::ForbiddenCharacter(0xFFFF)),
        ];
        for (doc, expected) in cases {
            assert_eq!(
                parse(doc),
                Err(expected),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let many = format!("<r>{}</r>", "<a/>".repeat(MAX_ELEMENTS));
        assert_eq!(parse(many.as_bytes()), Err(XmlError::TooManyElements));
        assert!(matches!(parse(b"<x><y></x>"), Err(XmlError::Syntax { .. })));
        assert!(matches!(parse(b"<x>"), Err(XmlError::Syntax { .. })));
    }

    #[test]
    fn the_writer_escapes_text_and_attributes() {
        let mut w = Writer::new();
        w.open_with("r", &[("a", "\"<&>")])
            .leaf("t", "<&>")
            .leaf_opt::<&str>("none", None)
            .close("r");
        let text = w.finish();
        let root = parse(text.as_bytes()).unwrap();
        assert_eq!(root.attribute("a"), Some("\"<&>"));
        assert_eq!(root.children.len(), 1);
        assert_eq!(root.children[0].text, "<&>");
    }
}
