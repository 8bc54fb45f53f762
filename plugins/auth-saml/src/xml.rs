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

/// Parses a SAML document: no DTD (so no entity tricks), bounded size.
pub fn parse(text: &str) -> Result<Document<'_>, String> {
    if text.len() > MAX_DOCUMENT {
        return Err(format!("the document is larger than {MAX_DOCUMENT} bytes"));
    }
    let options = ParsingOptions { allow_dtd: false, nodes_limit: 20_000 };
    Document::parse_with_options(text, options).map_err(|e| format!("not well-formed XML: {e}"))
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

/// The prefix an element or attribute was written with (`None`: none).
fn prefix_at<'i>(input: &'i str, qname_start: usize) -> Option<&'i str> {
    let rest = &input[qname_start..];
    let end = rest.find(|c: char| c.is_whitespace() || matches!(c, '>' | '/' | '=')).unwrap_or(rest.len());
    rest[..end].split_once(':').map(|(p, _)| p)
}

fn element_prefix<'i>(node: Node<'_, 'i>) -> Option<&'i str> {
    // The range of an element starts at its `<`.
    prefix_at(node.document().input_text(), node.range().start + 1)
}

/// Exclusive XML canonicalisation of `apex` and its subtree, without
/// comments, leaving out the subtree `exclude` (the enveloped-signature
/// transform). `inclusive` is the transform's InclusiveNamespaces
/// PrefixList (`#default` for the default namespace).
pub fn exc_c14n(apex: Node, exclude: Option<NodeId>, inclusive: &[String]) -> String {
    let mut out = String::with_capacity(apex.range().len());
    element(&mut out, apex, &[], exclude, inclusive);
    out
}

/// Namespace declarations (prefix, uri) that the output has in scope.
type Rendered = [(String, String)];

fn rendered_uri<'r>(rendered: &'r Rendered, prefix: &str) -> Option<&'r str> {
    rendered.iter().rev().find(|(p, _)| p == prefix).map(|(_, u)| u.as_str())
}

fn element(out: &mut String, node: Node, rendered: &Rendered, exclude: Option<NodeId>, inclusive: &[String]) {
    let input = node.document().input_text();
    let own_prefix = element_prefix(node).unwrap_or("");
    // The prefixes this element visibly uses, plus the inclusive ones.
    let mut wanted: Vec<&str> = vec![own_prefix];
    for attr in node.attributes() {
        if let Some(p) = prefix_at(input, attr.range_qname().start)
            && p != "xml"
            && !wanted.contains(&p)
        {
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
        let before = rendered_uri(rendered, prefix).unwrap_or("");
        let shown = rendered_uri(rendered, prefix).is_some();
        if (shown && before == uri) || (!shown && prefix.is_empty() && uri.is_empty()) {
            continue;
        }
        declarations.push((prefix.to_string(), uri.to_string()));
    }
    declarations.sort();

    let qname_end = input[node.range().start + 1..]
        .find(|c: char| c.is_whitespace() || matches!(c, '>' | '/'))
        .map(|i| node.range().start + 1 + i)
        .unwrap_or(input.len());
    let qname = &input[node.range().start + 1..qname_end];
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
    let mut attributes: Vec<(&str, &str, &str, &str)> = node
        .attributes()
        .map(|a| (a.namespace().unwrap_or(""), a.name(), &input[a.range_qname()], a.value()))
        .collect();
    attributes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, _, qname, value) in attributes {
        out.push(' ');
        out.push_str(qname);
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
            element(out, child, &scope, exclude, inclusive);
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
        exc_c14n(apex, exclude, &[])
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
    fn a_dtd_is_refused() {
        assert!(parse("<!DOCTYPE r [<!ENTITY e \"x\">]><r>&e;</r>").is_err());
    }
}
