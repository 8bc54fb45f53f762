//! XML the way SAML needs it: parsing with no DTD, the namespaces SAML
//! uses, child lookups that never search deeper than one level, and
//! exclusive canonicalisation (<https://www.w3.org/TR/xml-exc-c14n/>,
//! without comments) of an element with one subtree left out (the
//! enveloped signature).

use roxmltree::{Document, Node, NodeId, ParsingOptions};

pub const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
pub const XENC11: &str = "http://www.w3.org/2009/xmlenc11#";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

/// The most a SAML message may weigh once decoded.
pub const MAX_DOCUMENT: usize = 512 * 1024;

/// Bounds on a document's shape, checked before it is parsed: the parser
/// copies a scope's namespaces into each element that declares more, and
/// canonicalisation recurses once per level.
const MAX_DEPTH: usize = 64;
const MAX_DECLARATIONS: usize = 4096;
const MAX_DECLARATIONS_IN_SCOPE: usize = 128;
const MAX_NAME: usize = 1024;

/// Parses a SAML document: no DTD (so no entity tricks), bounded size,
/// depth, namespace declarations and name lengths.
pub fn parse(text: &str) -> Result<Document<'_>, String> {
    if text.len() > MAX_DOCUMENT {
        return Err(format!("the document is larger than {MAX_DOCUMENT} bytes"));
    }
    guard(text)?;
    let options = ParsingOptions { allow_dtd: false, nodes_limit: 20_000 };
    Document::parse_with_options(text, options).map_err(|e| format!("not well-formed XML: {e}"))
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A scan of the markup (comments, CDATA and PIs skipped; quoted values
/// respected) that refuses what would make parsing or canonicalising
/// costly. Malformed input it lets through, the parser refuses.
fn guard(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let skip = |from: usize, end: &[u8]| -> usize {
        text[from..].find(std::str::from_utf8(end).unwrap()).map_or(b.len(), |i| from + i + end.len())
    };
    let (mut i, mut total) = (0, 0);
    let mut scopes: Vec<usize> = Vec::new();
    while let Some(at) = text[i..].find('<').map(|o| i + o) {
        let rest = &b[at..];
        if rest.starts_with(b"<!--") {
            i = skip(at, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip(at, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip(at, b"?>");
        } else if rest.starts_with(b"<!") {
            return Err("a DOCTYPE is not accepted".into());
        } else if rest.starts_with(b"</") {
            scopes.pop();
            i = skip(at, b">");
        } else {
            // A start tag: names, and declarations, outside quoted values.
            let (mut j, mut quote, mut name, mut declarations) = (at + 1, 0u8, 0usize, 0usize);
            while j < b.len() {
                let c = b[j];
                if quote != 0 {
                    if c == quote {
                        quote = 0;
                    }
                } else if c == b'"' || c == b'\'' {
                    quote = c;
                    name = 0;
                } else if c == b'>' {
                    break;
                } else if is_xml_space(c) || c == b'=' || c == b'/' {
                    name = 0;
                } else {
                    if name == 0 && b[j..].starts_with(b"xmlns") {
                        declarations += 1;
                    }
                    name += 1;
                    if name > MAX_NAME {
                        return Err(format!("a name is longer than {MAX_NAME} bytes"));
                    }
                }
                j += 1;
            }
            total += declarations;
            if b.get(j.wrapping_sub(1)) != Some(&b'/') {
                scopes.push(declarations);
            }
            let in_scope: usize = scopes.iter().sum();
            if scopes.len() > MAX_DEPTH || total > MAX_DECLARATIONS || in_scope > MAX_DECLARATIONS_IN_SCOPE {
                return Err(format!(
                    "the document is nested deeper than {MAX_DEPTH} or declares more than {MAX_DECLARATIONS} namespaces ({MAX_DECLARATIONS_IN_SCOPE} in one scope)"
                ));
            }
            i = (j + 1).min(b.len());
        }
    }
    Ok(())
}

pub fn is(node: Node, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

/// The element children of `node` named `ns`:`name` (never deeper).
pub fn children<'a, 'i>(node: Node<'a, 'i>, ns: &'static str, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is(*c, ns, name))
}

/// The one child `ns`:`name`; an error when there is none or more than one.
pub fn only_child<'a, 'i>(node: Node<'a, 'i>, ns: &'static str, name: &'static str) -> Result<Node<'a, 'i>, String> {
    let mut found = children(node, ns, name);
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(format!("{} has no {name}", node.tag_name().name())),
        (Some(_), Some(_)) => Err(format!("{} has more than one {name}", node.tag_name().name())),
    }
}

/// The child `ns`:`name`, if there is exactly one; an error for several.
pub fn optional_child<'a, 'i>(node: Node<'a, 'i>, ns: &'static str, name: &'static str) -> Result<Option<Node<'a, 'i>>, String> {
    let mut found = children(node, ns, name);
    match (found.next(), found.next()) {
        (one, None) => Ok(one),
        (Some(_), Some(_)) => Err(format!("{} has more than one {name}", node.tag_name().name())),
        (None, Some(_)) => unreachable!(),
    }
}

/// The text of an element, trimmed: all of its text children joined. A
/// comment splits text into two nodes, and canonicalisation drops it, so
/// reading only the first (`Node::text`) would let a signed
/// `alice@example.com<!---->.evil.com` read as `alice@example.com`.
pub fn text(node: Node) -> String {
    let joined: String = node.children().filter(|c| c.is_text()).filter_map(|c| c.text()).collect();
    joined.trim().to_string()
}

/// Every `ID` attribute value in the document must be unique: a second
/// element with the signed element's ID is how signature wrapping hides.
pub fn ids_unique(doc: &Document) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for node in doc.descendants().filter(|n| n.is_element()) {
        if let Some(id) = node.attribute("ID")
            && !seen.insert(id)
        {
            return Err(format!("the ID {id:?} appears twice in the document"));
        }
    }
    Ok(())
}

/// The qualified name starting at `start` of the source, as written: its
/// end is XML whitespace, `>`, `/` or `=` (not any Unicode space: U+1680
/// is a name character). It must end with `local`, the parser's name.
fn qname_at<'i>(input: &'i str, start: usize, local: &str) -> Result<&'i str, String> {
    let rest = input.get(start..).ok_or("a name is cut")?;
    let end = rest.bytes().position(|c| is_xml_space(c) || matches!(c, b'>' | b'/' | b'=')).unwrap_or(rest.len());
    let qname = &rest[..end];
    let ok = match qname.split_once(':') {
        Some((_, name)) => name == local,
        None => qname == local,
    };
    if ok { Ok(qname) } else { Err(format!("the name {qname:?} is not what it parsed as ({local:?})")) }
}

fn prefix_of(qname: &str) -> &str {
    qname.split_once(':').map_or("", |(p, _)| p)
}

/// The most prefixes an InclusiveNamespaces PrefixList may name.
pub const MAX_INCLUSIVE: usize = 32;

/// Exclusive XML canonicalisation of `apex` and its subtree, without
/// comments, leaving out the subtree `exclude` (the enveloped-signature
/// transform). `inclusive` is the transform's InclusiveNamespaces
/// PrefixList (`#default` for the default namespace).
pub fn exc_c14n(apex: Node, exclude: Option<NodeId>, inclusive: &[String]) -> Result<String, String> {
    if inclusive.len() > MAX_INCLUSIVE {
        return Err(format!("an InclusiveNamespaces PrefixList names more than {MAX_INCLUSIVE} prefixes"));
    }
    let mut out = String::with_capacity(apex.range().len());
    element(&mut out, apex, &[], exclude, inclusive)?;
    Ok(out)
}

/// Namespace declarations (prefix, uri) that the output has in scope.
type Rendered = [(String, String)];

fn rendered_uri<'r>(rendered: &'r Rendered, prefix: &str) -> Option<&'r str> {
    rendered.iter().rev().find(|(p, _)| p == prefix).map(|(_, u)| u.as_str())
}

fn element(out: &mut String, node: Node, rendered: &Rendered, exclude: Option<NodeId>, inclusive: &[String]) -> Result<(), String> {
    let input = node.document().input_text();
    // The range of an element starts at its `<`.
    let qname = qname_at(input, node.range().start + 1, node.tag_name().name())?;
    let mut attributes: Vec<(&str, &str, &str, &str)> = Vec::new();
    for a in node.attributes() {
        attributes.push((a.namespace().unwrap_or(""), a.name(), qname_at(input, a.range_qname().start, a.name())?, a.value()));
    }
    // The prefixes this element visibly uses, plus the inclusive ones.
    let mut wanted: Vec<&str> = vec![prefix_of(qname)];
    for (_, _, attribute, _) in &attributes {
        let p = prefix_of(attribute);
        if !p.is_empty() && p != "xml" && !wanted.contains(&p) {
            wanted.push(p);
        }
    }
    for p in inclusive {
        let p = if p == "#default" { "" } else { p.as_str() };
        if !wanted.contains(&p) {
            wanted.push(p);
        }
    }
    let mut declarations: Vec<(String, String)> = Vec::new();
    for prefix in wanted {
        let uri = if prefix.is_empty() {
            node.default_namespace().unwrap_or("")
        } else {
            match node.namespaces().find(|n| n.name() == Some(prefix)) {
                Some(ns) => ns.uri(),
                // An inclusive prefix not in scope here.
                None => continue,
            }
        };
        let before = rendered_uri(rendered, prefix);
        if before == Some(uri) || (before.is_none() && prefix.is_empty() && uri.is_empty()) {
            continue;
        }
        declarations.push((prefix.to_string(), uri.to_string()));
    }
    declarations.sort();

    out.push('<');
    out.push_str(qname);
    for (prefix, uri) in &declarations {
        if prefix.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            out.push_str(" xmlns:");
            out.push_str(prefix);
            out.push_str("=\"");
        }
        escape_attribute(out, uri);
        out.push('"');
    }
    attributes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, _, attribute, value) in attributes {
        out.push(' ');
        out.push_str(attribute);
        out.push_str("=\"");
        escape_attribute(out, value);
        out.push('"');
    }
    out.push('>');

    let mut scope: Vec<(String, String)> = rendered.to_vec();
    scope.extend(declarations);
    for child in node.children() {
        if Some(child.id()) == exclude {
            continue;
        }
        if child.is_element() {
            element(out, child, &scope, exclude, inclusive)?;
        } else if child.is_text() {
            escape_text(out, child.text().unwrap_or_default());
        } else if let Some(pi) = child.pi() {
            out.push_str("<?");
            out.push_str(pi.target);
            if let Some(value) = pi.value {
                out.push(' ');
                out.push_str(value);
            }
            out.push_str("?>");
        }
    }
    out.push_str("</");
    out.push_str(qname);
    out.push('>');
    Ok(())
}

fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attribute(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Escapes text for element content or an attribute value we write.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_attribute(&mut out, text);
    out.replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str, exclude_name: Option<&str>) -> String {
        let doc = parse(xml).unwrap();
        let apex = doc.root_element();
        let exclude = exclude_name.and_then(|n| apex.descendants().find(|d| d.tag_name().name() == n)).map(|n| n.id());
        exc_c14n(apex, exclude, &[]).unwrap()
    }

    #[test]
    fn only_visibly_used_namespaces_are_rendered_once() {
        let xml = r#"<a:R xmlns:a="urn:a" xmlns:b="urn:b" xmlns:unused="urn:u" ID="1"><b:X   z="2" a:y="1"/><a:Y xmlns:a="urn:a">t &amp; &lt; &gt;</a:Y></a:R>"#;
        assert_eq!(
            c14n(xml, None),
            r#"<a:R xmlns:a="urn:a" ID="1"><b:X xmlns:b="urn:b" z="2" a:y="1"></b:X><a:Y>t &amp; &lt; &gt;</a:Y></a:R>"#
        );
    }

    #[test]
    fn attributes_sort_by_namespace_then_name_and_values_are_escaped() {
        let xml = "<r xmlns:z=\"urn:0\" b=\"x&#10;y\" a=\"&quot;&lt;\" z:c=\"1\"/>";
        assert_eq!(c14n(xml, None), "<r xmlns:z=\"urn:0\" a=\"&quot;&lt;\" b=\"x&#xA;y\" z:c=\"1\"></r>");
    }

    #[test]
    fn the_excluded_subtree_and_comments_are_left_out_and_default_namespaces_follow() {
        let xml = r#"<r xmlns="urn:d"><!-- c --><s>gone</s><k xmlns=""><i/></k></r>"#;
        assert_eq!(c14n(xml, Some("s")), r#"<r xmlns="urn:d"><k xmlns=""><i></i></k></r>"#);
    }

    #[test]
    fn text_is_every_text_child_however_comments_split_it() {
        let doc = parse("<v> alice@example.com<!---->.evil.com<?pi x?>.org </v>").unwrap();
        assert_eq!(text(doc.root_element()), "alice@example.com.evil.com.org");
    }

    #[test]
    fn a_unicode_space_in_a_name_is_part_of_the_name() {
        // U+1680 is whitespace to Rust but a name character to XML: the
        // element is `AttributeStatement\u{1680}x`, not `AttributeStatement`.
        let xml = "<r xmlns:s=\"urn:s\"><s:AttributeStatement\u{1680}x a=\"1\"/></r>";
        assert_eq!(c14n(xml, None), "<r><s:AttributeStatement\u{1680}x xmlns:s=\"urn:s\" a=\"1\"></s:AttributeStatement\u{1680}x></r>");
    }

    #[test]
    fn costly_shapes_are_refused_before_parsing() {
        let deep = "<a>".repeat(65) + &"</a>".repeat(65);
        assert!(parse(&deep).unwrap_err().contains("nested deeper"));
        let fine = "<a>".repeat(64) + "<b/><![CDATA[<<<]]><!-- <x> -->" + &"</a>".repeat(64);
        assert!(parse(&fine).is_ok());
        let scoped: String = (0..129).map(|i| format!("<e xmlns:p{i}=\"u\">")).collect::<String>() + &"</e>".repeat(129);
        assert!(parse(&scoped).is_err());
        let siblings = format!("<r>{}</r>", (0..2000).map(|i| format!("<e xmlns:p{i}=\"u\"/>")).collect::<String>());
        assert!(parse(&siblings).is_ok());
        let long = format!("<r a{}=\"1\"/>", "é".repeat(600));
        assert!(parse(&long).unwrap_err().contains("longer than"));
        assert!(parse("<r a='>' b=\"/>\"><c/></r>").is_ok());
        for cut in ["<r", "<r a=\"", "<r><!--", "<r><![CDATA[", "<r></r", "<"] {
            assert!(parse(cut).is_err(), "{cut}");
        }
    }

    #[test]
    fn a_dtd_is_refused() {
        assert!(parse("<!DOCTYPE r [<!ENTITY e \"x\">]><r>&e;</r>").is_err());
    }
}
