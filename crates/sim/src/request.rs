//! What the simulator reads from a request body, per endpoint. Everything else in the body is
//! accepted and ignored, as a real server would; what is read is checked with errors that name
//! the field.

use serde::Deserialize;

/// The generating and non-generating routes the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/images/generations`
    Images,
    /// `POST /v1/messages` (Anthropic's Messages API)
    Messages,
}

/// A tool the model will call, with the name of the argument it fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolChoice {
    pub name: String,
    pub argument: String,
}

/// The fields of a request the simulator acts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices (chat, completions) or images to generate.
    pub n: u32,
    pub max_tokens: Option<u32>,
    pub tool: Option<ToolChoice>,
    /// Embeddings: the inputs to embed, as text (token arrays are rendered as text).
    pub inputs: Vec<String>,
    pub base64: bool,
    pub dimensions: Option<u32>,
    /// Images: return base64 data rather than a URL.
    pub b64_json: bool,
    /// Anthropic's extended thinking asked for (`thinking.type` `enabled` or `adaptive`): the
    /// answer opens with a thinking block carrying a signature.
    pub thinking: bool,
    /// Tokens of the prompt, estimated as a quarter of the bytes of `messages`, `prompt` or
    /// `input` (so the same prompt counts the same whatever else the body carries).
    pub prompt_tokens: u32,
}

/// Why a request body was refused; rendered as OpenAI's `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest {
    pub message: String,
    pub param: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct FunctionDef {
    name: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A tool in chat's nested shape (`{"type":"function","function":{...}}`) or the Responses API's
/// flat shape (`{"type":"function","name":...}`).
#[derive(Deserialize)]
struct ToolDef {
    #[serde(default)]
    function: Option<FunctionDef>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
    /// Anthropic's shape: `{"name", "description", "input_schema"}`.
    #[serde(default)]
    input_schema: Option<Parameters>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

/// The union of the fields the simulator reads from any endpoint's body.
#[derive(Deserialize)]
struct Body {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    max_output_tokens: Option<u32>,
    tools: Option<Vec<ToolDef>>,
    tool_choice: Option<serde_json::Value>,
    messages: Option<Box<serde_json::value::RawValue>>,
    prompt: Option<Box<serde_json::value::RawValue>>,
    input: Option<serde_json::Value>,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
    response_format: Option<serde_json::Value>,
    thinking: Option<Thinking>,
}

/// Anthropic's `thinking` setting: `{"type": "enabled", "budget_tokens": N}`, `adaptive` or
/// `disabled`.
#[derive(Deserialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: String,
}

fn bad(message: impl Into<String>, param: &str) -> BadRequest {
    BadRequest {
        message: message.into(),
        param: Some(param.to_owned()),
    }
}

/// Reads the request body of `endpoint`.
pub(crate) fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<Parsed, BadRequest> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let body: Body = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            BadRequest {
                message: format!("the request body is not valid JSON: {inner}"),
                param: None,
            }
        } else {
            BadRequest {
                message: format!("invalid value for `{path}`: {inner}"),
                param: Some(path),
            }
        }
    })?;
    let model = match body.model {
        Some(m) if !m.is_empty() => m,
        _ => return Err(bad("you must provide a model parameter", "model")),
    };
    let stream = body.stream.unwrap_or(false);
    match endpoint {
        Endpoint::Chat | Endpoint::Messages if body.messages.is_none() => {
            return Err(bad("missing required parameter: 'messages'", "messages"));
        }
        Endpoint::Messages if body.max_tokens.is_none() => {
            return Err(bad("max_tokens: Field required", "max_tokens"));
        }
        Endpoint::Completions | Endpoint::Images if body.prompt.is_none() => {
            return Err(bad("missing required parameter: 'prompt'", "prompt"));
        }
        Endpoint::Embeddings if body.input.is_none() => {
            return Err(bad("missing required parameter: 'input'", "input"));
        }
        _ => {}
    }
    let prompt_bytes = body
        .messages
        .as_ref()
        .map(|m| m.get().len())
        .or(body.prompt.as_ref().map(|p| p.get().len()))
        .or(body.input.as_ref().map(|i| i.to_string().len()))
        .unwrap_or(0);
    let prompt_tokens = (prompt_bytes as u32 / 4).max(1);
    let n = if endpoint == Endpoint::Messages {
        1
    } else {
        body.n.unwrap_or(1)
    };
    if !(1..=16).contains(&n) {
        return Err(bad(
            format!("`n` is {n}; the simulator serves 1 to 16"),
            "n",
        ));
    }
    let inputs = match endpoint {
        Endpoint::Embeddings => embedding_inputs(body.input)?,
        _ => Vec::new(),
    };
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad(
                format!("`encoding_format` is `{other}`; use `float` or `base64`"),
                "encoding_format",
            ));
        }
    };
    if body.dimensions == Some(0) {
        return Err(bad("`dimensions` must be at least 1", "dimensions"));
    }
    let b64_json = match &body.response_format {
        Some(serde_json::Value::String(format)) if format == "b64_json" => true,
        Some(serde_json::Value::String(format)) if format == "url" => false,
        None => false,
        Some(_) if endpoint != Endpoint::Images => false,
        Some(other) => {
            return Err(bad(
                format!("`response_format` is {other}; use \"url\" or \"b64_json\""),
                "response_format",
            ));
        }
    };
    Ok(Parsed {
        model,
        stream,
        include_usage: body
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        n,
        max_tokens: body
            .max_completion_tokens
            .or(body.max_tokens)
            .or(body.max_output_tokens),
        tool: tool_choice(body.tools, body.tool_choice.as_ref()),
        inputs,
        base64,
        dimensions: body.dimensions,
        b64_json,
        thinking: endpoint == Endpoint::Messages
            && body
                .thinking
                .is_some_and(|t| matches!(t.kind.as_str(), "enabled" | "adaptive")),
        prompt_tokens,
    })
}

fn embedding_inputs(input: Option<serde_json::Value>) -> Result<Vec<String>, BadRequest> {
    let value = input.unwrap_or(serde_json::Value::Null);
    let input: Input = serde_json::from_value(value).map_err(|_| {
        bad(
            "`input` must be a string, an array of strings, an array of token ids or an array of \
             token-id arrays",
            "input",
        )
    })?;
    let inputs = match input {
        Input::Text(text) => vec![text],
        Input::Texts(texts) => texts,
        Input::Tokens(tokens) => vec![format!("{tokens:?}")],
        Input::TokenLists(lists) => lists.iter().map(|t| format!("{t:?}")).collect(),
    };
    if inputs.is_empty() {
        return Err(bad("`input` must not be empty", "input"));
    }
    Ok(inputs)
}

/// The tool the simulated model calls: the one `tool_choice` names, else the first; none when
/// `tool_choice` is `"none"` or there are no tools.
fn tool_choice(
    tools: Option<Vec<ToolDef>>,
    choice: Option<&serde_json::Value>,
) -> Option<ToolChoice> {
    let kind = choice.and_then(|c| c.as_str().or_else(|| c.get("type")?.as_str()));
    if kind == Some("none") {
        return None;
    }
    let wanted = choice.and_then(|c| {
        c.pointer("/function/name")
            .or_else(|| c.get("name"))
            .and_then(|n| n.as_str())
    });
    let tools = tools?;
    let named = tools.into_iter().filter_map(|tool| {
        let (name, parameters) = match tool.function {
            Some(function) => (function.name, function.parameters),
            None => (tool.name?, tool.parameters.or(tool.input_schema)),
        };
        Some((name, parameters))
    });
    let mut chosen = None;
    for (name, parameters) in named {
        let matches = wanted.is_none_or(|w| w == name);
        if matches && chosen.is_none() {
            chosen = Some((name, parameters));
        }
    }
    let (name, parameters) = chosen?;
    let argument = parameters
        .and_then(|p| p.properties)
        .and_then(|props| props.keys().next().cloned())
        .unwrap_or_else(|| "input".to_owned());
    Some(ToolChoice { name, argument })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_fields_are_read() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
            "stream":true,"stream_options":{"include_usage":true},"n":2,"max_tokens":7,
            "temperature":0.2,"tools":[{"type":"function","function":{"name":"get_weather",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#;
        let parsed = parse(Endpoint::Chat, body).unwrap();
        assert_eq!(parsed.model, "gpt-4o");
        assert!(parsed.stream && parsed.include_usage);
        assert_eq!((parsed.n, parsed.max_tokens), (2, Some(7)));
        assert_eq!(
            parsed.tool,
            Some(ToolChoice {
                name: "get_weather".into(),
                argument: "city".into()
            })
        );
    }

    #[test]
    fn tool_choice_none_or_named_is_honoured() {
        let tools = r#""tools":[{"type":"function","function":{"name":"a"}},
            {"type":"function","function":{"name":"b"}}]"#;
        let with = |choice: &str| {
            let body = format!(r#"{{"model":"m","messages":[],{tools},"tool_choice":{choice}}}"#);
            parse(Endpoint::Chat, body.as_bytes())
                .unwrap()
                .tool
                .map(|t| t.name)
        };
        assert_eq!(with(r#""none""#), None);
        assert_eq!(with(r#""auto""#).as_deref(), Some("a"));
        assert_eq!(
            with(r#"{"type":"function","function":{"name":"b"}}"#).as_deref(),
            Some("b")
        );
        let flat = br#"{"model":"m","input":"x","tools":[{"type":"function","name":"f"}]}"#;
        assert_eq!(
            parse(Endpoint::Responses, flat)
                .unwrap()
                .tool
                .unwrap()
                .argument,
            "input"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let syntax = parse(Endpoint::Chat, b"{\"model\": ").unwrap_err();
        assert!(
            syntax.message.contains("not valid JSON"),
            "{}",
            syntax.message
        );
        let typed = parse(
            Endpoint::Chat,
            br#"{"model":"m","messages":[],"stream":"yes"}"#,
        )
        .unwrap_err();
        assert_eq!(typed.param.as_deref(), Some("stream"));
        assert!(typed.message.contains("`stream`"), "{}", typed.message);
        let nested = parse(
            Endpoint::Chat,
            br#"{"model":"m","messages":[],"stream_options":{"include_usage":3}}"#,
        )
        .unwrap_err();
        assert_eq!(
            nested.param.as_deref(),
            Some("stream_options.include_usage")
        );
        let no_model = parse(Endpoint::Chat, br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(no_model.param.as_deref(), Some("model"));
        let no_messages = parse(Endpoint::Chat, br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(no_messages.param.as_deref(), Some("messages"));
        let bad_n = parse(Endpoint::Chat, br#"{"model":"m","messages":[],"n":0}"#).unwrap_err();
        assert_eq!(bad_n.param.as_deref(), Some("n"));
    }

    #[test]
    fn embedding_inputs_in_every_shape() {
        let read = |input: &str| {
            let body = format!(r#"{{"model":"e","input":{input}}}"#);
            parse(Endpoint::Embeddings, body.as_bytes()).map(|p| p.inputs.len())
        };
        assert_eq!(read(r#""one""#), Ok(1));
        assert_eq!(read(r#"["a","b","c"]"#), Ok(3));
        assert_eq!(read("[1,2,3]"), Ok(1));
        assert_eq!(read("[[1],[2]]"), Ok(2));
        assert!(read("[]").is_err());
        assert!(read("{}").is_err());
        let b64 = br#"{"model":"e","input":"x","encoding_format":"base64","dimensions":8}"#;
        let parsed = parse(Endpoint::Embeddings, b64).unwrap();
        assert!(parsed.base64);
        assert_eq!(parsed.dimensions, Some(8));
    }
}
