//! XML: a small namespace-resolved tree of an answer (quick-xml does the parsing), the
//! multistatus reading and the one spelling of hrefs. Pure: tested on byte strings.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Default, Clone)]
pub(super) struct Node {
    pub(super) ns: String,
    pub(super) name: String,
    pub(super) text: String,
    pub(super) children: Vec<Node>,
}

impl Node {
    pub(super) fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub(super) fn child(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub(super) fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Node> {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The first descendant so named, depth first.
    pub(super) fn find(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find_map(|c| {
            if c.is(ns, name) {
                Some(c)
            } else {
                c.find(ns, name)
            }
        })
    }

    pub(super) fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

/// How deep an answer's elements may nest (a multistatus with a vCard property needs 6).
pub(super) const MAX_XML_DEPTH: usize = 64;

pub(super) fn parse_xml(bytes: &[u8]) -> Result<Node, String> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let text = std::str::from_utf8(bytes).map_err(|_| "the XML is not UTF-8".to_owned())?;
    let mut reader = quick_xml::NsReader::from_str(text);
    let mut stack: Vec<Node> = vec![Node::default()];
    let namespace = |resolved: ResolveResult<'_>| match resolved {
        ResolveResult::Bound(ns) => ns.as_ref().to_owned(),
        _ => String::new(),
    };
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|err| format!("malformed XML: {err}"))?;
        match event {
            Event::Start(start) => {
                let node = Node {
                    ns: namespace(resolved),
                    name: start.local_name().as_ref().to_owned(),
                    ..Node::default()
                };
                // A multistatus is six levels deep; a document nested thousands deep is
                // hostile (each level costs memory and, in a recursive reader, stack).
                if stack.len() > MAX_XML_DEPTH {
                    return Err(format!(
                        "the XML is nested deeper than {MAX_XML_DEPTH} elements"
                    ));
                }
                stack.push(node);
            }
            Event::Empty(start) => {
                let node = Node {
                    ns: namespace(resolved),
                    name: start.local_name().as_ref().to_owned(),
                    ..Node::default()
                };
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced XML")?;
                let parent = stack.last_mut().ok_or("unbalanced XML")?;
                parent.children.push(node);
            }
            Event::Text(text) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&data.into_inner());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*reference {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("unknown XML entity &{other};")),
                    },
                    Err(err) => return Err(format!("bad character reference: {err}")),
                };
                if let Some(node) = stack.last_mut() {
                    node.text.push(resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err("the XML ends inside an element".into());
    }
    let mut root = stack.pop().unwrap_or_default();
    root.children.pop().ok_or_else(|| "no XML element".into())
}

/// The status code of a `<D:status>HTTP/1.1 404 Not Found</D:status>` line.
pub(super) fn status_of(node: &Node) -> Option<u16> {
    node.child(DAV, "status")?
        .trimmed()
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A `<D:response>` of a multistatus: its href, its status (when the response has one
/// rather than propstats) and the properties found with 200.
#[derive(Debug)]
pub(super) struct DavResponse<'a> {
    pub(super) href: String,
    pub(super) status: Option<u16>,
    pub(super) props: Vec<&'a Node>,
}

pub(super) fn multistatus(root: &Node) -> Result<Vec<DavResponse<'_>>, String> {
    if !root.is(DAV, "multistatus") {
        return Err(format!("expected a DAV multistatus, got <{}>", root.name));
    }
    let mut responses = Vec::new();
    for response in root.children_named(DAV, "response") {
        let href = response
            .child(DAV, "href")
            .map(|h| h.trimmed().to_owned())
            .filter(|h| !h.is_empty())
            .ok_or("a response without href")?;
        let mut props = Vec::new();
        for propstat in response.children_named(DAV, "propstat") {
            if status_of(propstat) == Some(200)
                && let Some(prop) = propstat.child(DAV, "prop")
            {
                props.extend(prop.children.iter());
            }
        }
        responses.push(DavResponse {
            href,
            status: status_of(response),
            props,
        });
    }
    Ok(responses)
}

impl DavResponse<'_> {
    pub(super) fn prop(&self, ns: &str, name: &str) -> Option<&Node> {
        self.props.iter().copied().find(|p| p.is(ns, name))
    }
}

/// An href as a URL in one spelling: servers write the same card as `a%40b.vcf` in one
/// answer and `a@b.vcf` in another, or `%3a` and `%3A`. Percent-encoded unreserved
/// characters and `@` are decoded, other escapes upper-cased (RFC 3986 §6.2.2).
pub(super) fn card_url(base: &Url, href: &str) -> Option<Url> {
    let mut url = base.join(href).ok()?;
    let path = url.path().as_bytes();
    let mut canonical = String::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if path[i] == b'%'
            && i + 2 < path.len()
            && let (Some(high), Some(low)) = (hex(path[i + 1]), hex(path[i + 2]))
        {
            let byte = u8::try_from(high * 16 + low).unwrap_or(b'%');
            if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
                canonical.push(char::from(byte));
            } else {
                canonical.push_str(&format!("%{byte:02X}"));
            }
            i += 3;
        } else {
            canonical.push(char::from(path[i]));
            i += 1;
        }
    }
    url.set_path(&canonical);
    Some(url)
}

pub(super) fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
