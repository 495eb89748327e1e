//! What a real provider checks before it looks at a request (issue 14): its
//! credential header and value, and its path shape. Set per mock with the control keys
//! `expect=openai|azure|anthropic|none`, `key=` and (Azure) `deployment=`; a wrong key
//! gets the provider's real 401 body, a wrong path its 404.

use super::http::RecordedRequest;

/// The provider whose gate the mock plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// `authorization: Bearer <key>`, paths under `/v1/`.
    OpenAi,
    /// `api-key: <key>`, `/openai/deployments/<deployment>/…?api-version=…`.
    Azure {
        /// The deployment in the path.
        deployment: String,
    },
    /// `x-api-key: <key>` and `anthropic-version`, `/v1/messages`.
    Anthropic,
}

/// A gate and the key it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Which provider's checks.
    pub gate: Gate,
    /// The only key accepted.
    pub key: String,
}

const OPENAI_401: &str = r#"{"error":{"message":"Incorrect API key provided: sk-****. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
const AZURE_401: &str = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#;
const ANTHROPIC_401: &str =
    r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
const AZURE_404: &str = r#"{"error":{"code":"404","message":"Resource not found"}}"#;
const ANTHROPIC_404: &str =
    r#"{"type":"error","error":{"type":"not_found_error","message":"Not Found"}}"#;
const ANTHROPIC_400_VERSION: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"anthropic-version: header is required"}}"#;

impl Expect {
    /// From the control keys: `expect` (`none` clears: `Ok(None)`), `key`, `deployment`.
    pub fn parse(
        expect: &str,
        key: Option<&str>,
        deployment: Option<&str>,
    ) -> Result<Option<Expect>, String> {
        let gate = match expect {
            "none" => return Ok(None),
            "openai" => Gate::OpenAi,
            "anthropic" => Gate::Anthropic,
            "azure" => Gate::Azure {
                deployment: deployment
                    .filter(|d| !d.is_empty())
                    .ok_or("expect=azure needs deployment=")?
                    .to_string(),
            },
            other => return Err(format!("unknown expect={other:?}")),
        };
        let key = key.filter(|k| !k.is_empty()).ok_or("expect= needs key=")?;
        Ok(Some(Expect {
            gate,
            key: key.to_string(),
        }))
    }

    /// `None` when the provider would take the request, else its status and body.
    pub fn check(&self, req: &RecordedRequest) -> Option<(u16, &'static str)> {
        match &self.gate {
            Gate::OpenAi => {
                let want = format!("Bearer {}", self.key);
                if req.header("authorization") != Some(want.as_str()) {
                    return Some((401, OPENAI_401));
                }
                if !req.path().starts_with("/v1/") {
                    return Some((404, OPENAI_404));
                }
                None
            }
            Gate::Azure { deployment } => {
                let prefix = format!("/openai/deployments/{deployment}/");
                let versioned = req
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("api-version=")));
                if !req.path().starts_with(&prefix) || !versioned {
                    return Some((404, AZURE_404));
                }
                (req.header("api-key") != Some(self.key.as_str())).then_some((401, AZURE_401))
            }
            Gate::Anthropic => {
                if req.header("x-api-key") != Some(self.key.as_str()) {
                    return Some((401, ANTHROPIC_401));
                }
                if req.path() != "/v1/messages" {
                    return Some((404, ANTHROPIC_404));
                }
                req.header("anthropic-version")
                    .is_none()
                    .then_some((400, ANTHROPIC_400_VERSION))
            }
        }
    }
}

const OPENAI_404: &str = r#"{"error":{"message":"Invalid URL","type":"invalid_request_error","param":null,"code":null}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn each_gate_takes_its_own_key_and_path_only() {
        let openai = Expect::parse("openai", Some("sk-1"), None)
            .unwrap()
            .unwrap();
        let ok = req("/v1/chat/completions", &[("authorization", "Bearer sk-1")]);
        assert_eq!(openai.check(&ok), None);
        let wrong = req("/v1/chat/completions", &[("authorization", "Bearer sk-2")]);
        assert_eq!(openai.check(&wrong).map(|r| r.0), Some(401));
        assert!(openai.check(&wrong).unwrap().1.contains("invalid_api_key"));

        let azure = Expect::parse("azure", Some("az"), Some("gpt-4o"))
            .unwrap()
            .unwrap();
        let path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
        assert_eq!(azure.check(&req(path, &[("api-key", "az")])), None);
        assert_eq!(
            azure
                .check(&req(path, &[("authorization", "Bearer az")]))
                .map(|r| r.0),
            Some(401)
        );
        let v1 = req("/v1/chat/completions", &[("api-key", "az")]);
        assert_eq!(azure.check(&v1).map(|r| r.0), Some(404));
        let unversioned = req(
            "/openai/deployments/gpt-4o/chat/completions",
            &[("api-key", "az")],
        );
        assert_eq!(azure.check(&unversioned).map(|r| r.0), Some(404));

        let anthropic = Expect::parse("anthropic", Some("ak"), None)
            .unwrap()
            .unwrap();
        let ok = req(
            "/v1/messages",
            &[("x-api-key", "ak"), ("anthropic-version", "2023-06-01")],
        );
        assert_eq!(anthropic.check(&ok), None);
        assert_eq!(
            anthropic
                .check(&req("/v1/messages", &[("x-api-key", "no")]))
                .map(|r| r.0),
            Some(401)
        );
        assert_eq!(
            anthropic
                .check(&req("/v1/messages", &[("x-api-key", "ak")]))
                .map(|r| r.0),
            Some(400)
        );
    }

    #[test]
    fn bad_expectations_are_refused() {
        assert!(Expect::parse("azure", Some("k"), None).is_err());
        assert!(Expect::parse("openai", None, None).is_err());
        assert!(Expect::parse("gemini", Some("k"), None).is_err());
        assert_eq!(Expect::parse("none", None, None), Ok(None));
    }
}
