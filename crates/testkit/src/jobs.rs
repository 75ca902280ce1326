//! Background jobs as a test drives them over HTTP: a chat job submitted with
//! `Prefer: respond-async` (to model `m`, with an optional simulator fault), and its job object
//! while it runs.

use serde_json::Value;

use crate::http::http;

/// Submits a chat job for model `m` to `addr`; its id. Panics unless it is accepted (202).
pub fn submit(addr: &str, stream: bool, fault: Option<&str>) -> String {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
    );
    let mut headers = vec![("prefer", "respond-async")];
    if let Some(fault) = fault {
        headers.push(("x-sim-fault", fault));
    }
    let (status, body) = http(addr, "POST", "/v1/chat/completions", &headers, &body);
    assert_eq!(status, 202, "{body}");
    let job: Value = serde_json::from_str(&body).unwrap();
    job["id"].as_str().unwrap().to_owned()
}

/// The job object while it runs (202), or `None` once it has ended.
pub fn running(addr: &str, id: &str) -> Option<Value> {
    let (status, body) = http(addr, "GET", &format!("/v1/hourglass/jobs/{id}"), &[], "");
    (status == 202).then(|| serde_json::from_str(&body).unwrap())
}
