//! The `ec2` IaaS: machines are Amazon EC2 instances, made through the EC2
//! Query API (API version 2016-11-15) over outbound HTTP, each request
//! signed with Signature V4 in the plugin ([`sigv4`]).
//!
//! ```toml
//! [plugin.config]
//! region = "us-east-1"                 # endpoint: https://ec2.<region>.amazonaws.com unless given
//! access_key_id = "AKIA..."
//! secret_access_key_file = "/etc/torii/ec2.secret"
//! engine_port = 2376                   # where the instances' Docker engines answer
//! engine_protocol = "https"
//! address = "private"                  # or "public": which IP the node address uses
//! ```
//!
//! Machine parameters (a template's, the request's over them): `image`
//! (required), `type`, `subnet-id`, `security-group` (comma-separated ids),
//! `key-name`, `user-data` (sent base64-encoded), `tags` (`k1:v1,k2:v2`).
//! Every instance is tagged `torii-iaas=<entry name>`, which `list`
//! and describe check, so another plugin's or person's instances are never
//! listed, described or destroyed through this one.

mod sigv4;

use base64::Engine as _;
use torii_plugin_sdk::export_iaas;
use torii_plugin_sdk::http::{self, Request};
use torii_plugin_sdk::iaas::{self as sdk, Error, Iaas, Machine, Outcome};

const API_VERSION: &str = "2016-11-15";
const OWNER_TAG: &str = "torii-iaas";

struct Ec2 {
    name: String,
    endpoint: String,
    host: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    engine_port: u16,
    engine_protocol: String,
    public_address: bool,
}

/// One instance as EC2 describes it.
#[derive(Debug, Default, PartialEq)]
struct Instance {
    id: String,
    state: String,
    private_ip: String,
    public_ip: String,
    /// Its `torii-iaas` tag.
    owner: String,
}

fn text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children().find(|c| c.tag_name().name() == name).and_then(|c| c.text())
}

/// The instances of an EC2 answer (`instancesSet/item` anywhere in it).
fn instances(xml: &str) -> Result<Vec<Instance>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("EC2 answered XML that does not parse: {e}"))?;
    let mut out = Vec::new();
    for set in doc.descendants().filter(|n| n.tag_name().name() == "instancesSet") {
        for item in set.children().filter(|n| n.tag_name().name() == "item") {
            let state = item.children().find(|c| c.tag_name().name() == "instanceState").and_then(|s| text(s, "name")).unwrap_or_default();
            let state = if state.is_empty() { item.children().find(|c| c.tag_name().name() == "currentState").and_then(|s| text(s, "name")).unwrap_or_default() } else { state };
            let tags = item.children().find(|c| c.tag_name().name() == "tagSet");
            let owner = tags
                .into_iter()
                .flat_map(|t| t.children().filter(|c| c.tag_name().name() == "item"))
                .find(|t| text(*t, "key") == Some(OWNER_TAG))
                .and_then(|t| text(t, "value"))
                .unwrap_or_default();
            out.push(Instance {
                id: text(item, "instanceId").unwrap_or_default().to_string(),
                state: state.to_string(),
                private_ip: text(item, "privateIpAddress").unwrap_or_default().to_string(),
                public_ip: text(item, "ipAddress").unwrap_or_default().to_string(),
                owner: owner.to_string(),
            });
        }
    }
    Ok(out)
}

/// An EC2 error answer's code and message.
fn error_of(xml: &str) -> (String, String) {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return (String::new(), xml.chars().take(200).collect()) };
    let error = doc.descendants().find(|n| n.tag_name().name() == "Error");
    let get = |name: &str| error.and_then(|e| text(e, name)).unwrap_or_default().to_string();
    (get("Code"), get("Message"))
}

/// The EC2 parameters of a machine's parameters.
fn run_params(params: &[(String, String)], name: &str) -> Outcome<Vec<(String, String)>> {
    let get = |key: &str| sdk::param(params, key).filter(|v| !v.is_empty());
    let image = get("image").ok_or_else(|| Error::Invalid("parameter image (the AMI id) is required".into()))?;
    let mut out: Vec<(String, String)> = vec![
        ("ImageId".into(), image.into()),
        ("InstanceType".into(), get("type").unwrap_or("t3.micro").into()),
        ("MinCount".into(), "1".into()),
        ("MaxCount".into(), "1".into()),
    ];
    if let Some(subnet) = get("subnet-id") {
        out.push(("SubnetId".into(), subnet.into()));
    }
    if let Some(key) = get("key-name") {
        out.push(("KeyName".into(), key.into()));
    }
    if let Some(groups) = get("security-group") {
        for (i, g) in groups.split(',').map(str::trim).filter(|g| !g.is_empty()).enumerate() {
            out.push((format!("SecurityGroupId.{}", i + 1), g.into()));
        }
    }
    if let Some(data) = get("user-data") {
        out.push(("UserData".into(), base64::engine::general_purpose::STANDARD.encode(data)));
    }
    let mut tags = vec![(OWNER_TAG.to_string(), name.to_string())];
    if let Some(list) = get("tags") {
        for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once(':').ok_or_else(|| Error::Invalid(format!("tag {pair:?} is not key:value")))?;
            if k == OWNER_TAG {
                return Err(Error::Invalid(format!("tag {OWNER_TAG} is torii's own")));
            }
            tags.push((k.to_string(), v.to_string()));
        }
    }
    out.push(("TagSpecification.1.ResourceType".into(), "instance".into()));
    for (i, (k, v)) in tags.into_iter().enumerate() {
        out.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), k));
        out.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v));
    }
    Ok(out)
}

impl Ec2 {
    /// Calls `action` with `params`; the answer's body.
    fn call(&self, action: &str, params: Vec<(String, String)>) -> Outcome<String> {
        let mut pairs = vec![("Action".to_string(), action.to_string()), ("Version".to_string(), API_VERSION.to_string())];
        pairs.extend(params);
        let body = sigv4::form(&pairs);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let amz_date = torii_plugin_sdk::time::format_compact(torii_plugin_sdk::time::now());
        let signer = sigv4::Signer { access_key_id: &self.access_key_id, secret_access_key: &self.secret_access_key, region: &self.region, service: "ec2" };
        let unsigned = sigv4::Unsigned { method: "POST", host: &self.host, path: "/", query: "", content_type, body: body.as_bytes() };
        let authorization = signer.authorization(&unsigned, &amz_date);
        let request = Request::new("POST", &format!("{}/", self.endpoint))
            .header("content-type", content_type)
            .header("x-amz-date", &amz_date)
            .header("authorization", &authorization)
            .body(body);
        let response = http::send(&request).map_err(|e| Error::Unavailable(format!("EC2 at {} did not answer {action}: {e}", self.endpoint)))?;
        let text = response.text();
        if (200..300).contains(&response.status) {
            return Ok(text);
        }
        let (code, message) = error_of(&text);
        let what = format!("EC2 refused {action}: {code}: {message}");
        Err(match (response.status, code.as_str()) {
            (_, "InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed") => Error::NotFound(what),
            (401 | 403, _) => Error::Internal(what),
            (400..=499, _) => Error::Invalid(what),
            _ => Error::Unavailable(what),
        })
    }

    /// Instance `id`, if it is one this entry made (tagged as its own).
    fn describe(&self, id: &str) -> Outcome<Instance> {
        let body = self.call("DescribeInstances", vec![("InstanceId.1".into(), id.into())])?;
        let found = instances(&body).map_err(Error::Internal)?.into_iter().find(|i| i.id == id && i.owner == self.name);
        found.ok_or_else(|| Error::NotFound(format!("no EC2 instance {id} of IaaS {}", self.name)))
    }

    fn machine(&self, i: Instance, params: Vec<(String, String)>) -> Machine {
        let address = if self.public_address && !i.public_ip.is_empty() { i.public_ip } else { i.private_ip };
        Machine { id: i.id, address, port: self.engine_port, protocol: self.engine_protocol.clone(), status: i.state, creation_params: params }
    }
}

fn config_text(config: &serde_json::Value, key: &str) -> Option<String> {
    config.get(key).and_then(|v| v.as_str()).map(str::to_string).filter(|s| !s.is_empty())
}

impl Iaas for Ec2 {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let region = config_text(&config, "region").unwrap_or_else(|| "us-east-1".into());
        let endpoint = config_text(&config, "endpoint").unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com")).trim_end_matches('/').to_string();
        let host = endpoint.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_string()).filter(|h| !h.is_empty());
        let host = host.ok_or_else(|| format!("ec2 config: endpoint {endpoint:?} is not an http(s) URL"))?;
        let access_key_id = config_text(&config, "access_key_id").ok_or("ec2 config: access_key_id is required")?;
        let secret_access_key = config_text(&config, "secret_access_key").map(|s| s.trim().to_string()).ok_or("ec2 config: secret_access_key (or secret_access_key_file) is required")?;
        let engine_port = match config.get("engine_port") {
            None => 2376,
            Some(v) => v.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or("ec2 config: engine_port must be a port number")?,
        };
        let engine_protocol = config_text(&config, "engine_protocol").unwrap_or_else(|| "https".into());
        if !["http", "https", "tcp"].contains(&engine_protocol.as_str()) {
            return Err(format!("ec2 config: engine_protocol {engine_protocol:?} is not http, https or tcp"));
        }
        let public_address = match config_text(&config, "address").as_deref() {
            None | Some("private") => false,
            Some("public") => true,
            Some(other) => return Err(format!("ec2 config: address {other:?} is not private or public")),
        };
        let name = config_text(&config, "name").unwrap_or_else(|| "ec2".into());
        Ok(Ec2 { name, endpoint, host, region, access_key_id, secret_access_key, engine_port, engine_protocol, public_address })
    }

    /// Answers as soon as EC2 ran the instance (pending, its private
    /// address known): the host waits for its engine, and a describe right
    /// after RunInstances may not find it yet (EC2 is eventually consistent).
    fn create_machine(&self, params: &[(String, String)]) -> Outcome<Machine> {
        let body = self.call("RunInstances", run_params(params, &self.name)?)?;
        let instance = instances(&body).map_err(Error::Internal)?.into_iter().next().ok_or_else(|| Error::Internal("EC2 ran no instance".into()))?;
        Ok(self.machine(instance, params.to_vec()))
    }

    fn describe_machine(&self, id: &str) -> Outcome<Machine> {
        Ok(self.machine(self.describe(id)?, Vec::new()))
    }

    fn destroy_machine(&self, id: &str) -> Outcome<()> {
        // Only an instance of this entry's own (gone already: nothing to do).
        match self.describe(id) {
            Ok(_) => {}
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        match self.call("TerminateInstances", vec![("InstanceId.1".into(), id.into())]) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list_machines(&self) -> Outcome<Vec<Machine>> {
        let filters = vec![
            ("Filter.1.Name".to_string(), format!("tag:{OWNER_TAG}")),
            ("Filter.1.Value.1".to_string(), self.name.clone()),
            ("Filter.2.Name".to_string(), "instance-state-name".to_string()),
            ("Filter.2.Value.1".to_string(), "pending".to_string()),
            ("Filter.2.Value.2".to_string(), "running".to_string()),
            ("Filter.2.Value.3".to_string(), "stopping".to_string()),
            ("Filter.2.Value.4".to_string(), "stopped".to_string()),
        ];
        let body = self.call("DescribeInstances", filters)?;
        Ok(instances(&body).map_err(Error::Internal)?.into_iter().map(|i| self.machine(i, Vec::new())).collect())
    }
}

export_iaas!(Ec2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_and_errors_are_read_from_ec2_answers() {
        let run = r#"<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><instancesSet><item>
            <instanceId>i-1</instanceId><instanceState><code>0</code><name>pending</name></instanceState>
            <privateIpAddress>10.0.0.5</privateIpAddress></item></instancesSet></RunInstancesResponse>"#;
        assert_eq!(instances(run).unwrap(), vec![Instance { id: "i-1".into(), state: "pending".into(), private_ip: "10.0.0.5".into(), public_ip: String::new(), owner: String::new() }]);
        let described = r#"<DescribeInstancesResponse><reservationSet><item><instancesSet><item><instanceId>i-2</instanceId>
            <instanceState><name>running</name></instanceState><tagSet><item><key>team</key><value>red</value></item>
            <item><key>torii-iaas</key><value>ec2</value></item></tagSet></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#;
        assert_eq!(instances(described).unwrap()[0].owner, "ec2");
        let err = r#"<Response><Errors><Error><Code>InvalidAMIID.Malformed</Code><Message>bad ami</Message></Error></Errors></Response>"#;
        assert_eq!(error_of(err), ("InvalidAMIID.Malformed".into(), "bad ami".into()));
    }

    #[test]
    fn machine_params_become_ec2_params() {
        let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let out = run_params(&p(&[("image", "ami-1"), ("security-group", "sg-1, sg-2"), ("user-data", "hi"), ("tags", "team:red"), ("pool", "p")]), "ec2").unwrap();
        let get = |k: &str| out.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ImageId"), Some("ami-1"));
        assert_eq!(get("InstanceType"), Some("t3.micro"));
        assert_eq!((get("SecurityGroupId.1"), get("SecurityGroupId.2")), (Some("sg-1"), Some("sg-2")));
        assert_eq!(get("UserData"), Some("aGk="));
        assert_eq!((get("TagSpecification.1.Tag.1.Key"), get("TagSpecification.1.Tag.1.Value")), (Some("torii-iaas"), Some("ec2")));
        assert_eq!((get("TagSpecification.1.Tag.2.Key"), get("TagSpecification.1.Tag.2.Value")), (Some("team"), Some("red")));
        assert!(get("pool").is_none());
        assert!(matches!(run_params(&p(&[("type", "t3.micro")]), "ec2"), Err(Error::Invalid(_))));
        assert!(matches!(run_params(&p(&[("image", "a"), ("tags", "torii-iaas:x")]), "ec2"), Err(Error::Invalid(_))));
    }
}
