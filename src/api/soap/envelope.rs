//! SOAP 1.1 and 1.2 envelopes: which version, the header blocks we must understand, the one
//! operation element of the body, and the WS-Security UsernameToken.

use super::SoapError;
use super::xml::Element;

pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const PASSWORD_TEXT: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Soap11,
    Soap12,
}

impl Version {
    pub fn namespace(self) -> &'static str {
        match self {
            Version::Soap11 => SOAP11_NS,
            Version::Soap12 => SOAP12_NS,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Version::Soap11 => "text/xml; charset=utf-8",
            Version::Soap12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// A bearer credential found in the message: the caller's name and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameToken {
    pub username: String,
    pub password: String,
}

#[derive(Debug)]
pub struct Envelope {
    pub security: Option<UsernameToken>,
    pub operation: Element,
}

fn must_understand(block: &Element, version: Version) -> bool {
    block
        .attributes
        .iter()
        .find(|a| a.name == "mustUnderstand" && a.ns.as_deref() == Some(version.namespace()))
        .is_some_and(|a| matches!(a.value.trim(), "1" | "true"))
}

/// Checks the envelope of a request sent as `version` and takes it apart.
pub fn open(root: Element, version: Version) -> Result<Envelope, SoapError> {
    if root.name != "Envelope" || root.ns.as_deref() != Some(version.namespace()) {
        return Err(match root.ns.as_deref() {
            Some(SOAP11_NS) | Some(SOAP12_NS) if root.name == "Envelope" => {
                SoapError::VersionMismatch(format!(
                    "the envelope is in {} but the content type announces {}",
                    root.ns.as_deref().unwrap_or_default(),
                    version.namespace()
                ))
            }
            _ => SoapError::VersionMismatch(format!(
                "the document element is {}, not {{{}}}Envelope",
                root.qualified(),
                version.namespace()
            )),
        });
    }
    let mut header = None;
    let mut body = None;
    for (i, child) in root.children.into_iter().enumerate() {
        match (child.ns.as_deref(), child.name.as_str()) {
            (Some(ns), "Header") if ns == version.namespace() && i == 0 => header = Some(child),
            (Some(ns), "Body") if ns == version.namespace() && body.is_none() => body = Some(child),
            _ => {
                return Err(SoapError::Invalid(format!(
                    "Envelope: unexpected element {} (expected an optional Header, then one Body)",
                    child.qualified()
                )));
            }
        }
    }
    let mut body = body.ok_or_else(|| SoapError::Invalid("Envelope: no Body".into()))?;
    if body.children.len() != 1 {
        return Err(SoapError::Invalid(format!(
            "Body: expected exactly one operation element, found {}",
            body.children.len()
        )));
    }
    let operation = body.children.remove(0);
    let mut security = None;
    if let Some(header) = header {
        for block in &header.children {
            if block.is(WSSE_NS, "Security") {
                security = username_token(block)?;
            } else if must_understand(block, version) {
                return Err(SoapError::MustUnderstand(block.qualified()));
            }
        }
    }
    Ok(Envelope {
        security,
        operation,
    })
}

fn username_token(security: &Element) -> Result<Option<UsernameToken>, SoapError> {
    let Some(token) = security
        .children
        .iter()
        .find(|c| c.is(WSSE_NS, "UsernameToken"))
    else {
        return Ok(None);
    };
    let part = |name: &str| {
        token
            .children
            .iter()
            .find(|c| c.is(WSSE_NS, name))
            .ok_or_else(|| {
                SoapError::Unauthenticated(format!("UsernameToken without {name}").into())
            })
    };
    let username = part("Username")?.text.trim().to_string();
    let password = part("Password")?;
    if let Some(kind) = password.attribute("Type")
        && kind.trim() != PASSWORD_TEXT
    {
        return Err(SoapError::Unauthenticated(
            "only PasswordText is accepted: send the token itself, over TLS".into(),
        ));
    }
    Ok(Some(UsernameToken {
        username,
        password: password.text.trim().to_string(),
    }))
}
