//! A strict reader of the Prometheus text exposition format (0.0.4), for tests that scrape
//! `/metrics`.
//!
//! Hand-written rather than the `prometheus-parse` crate, whose last release pulls `regex`,
//! `chrono`, `lazy_static` and an old `itertools` into the test build for what is here a
//! line format of a few rules; and this one refuses what it does not understand instead of
//! skipping it, so a malformed exposition fails the test.

use std::collections::BTreeMap;

/// One sample: a name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name (`kraken_http_requests_total`, `…_bucket`, …).
    pub name: String,
    /// Its labels, by name.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition: every sample, and the type of every family that declares one.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// The samples, in order.
    pub samples: Vec<Sample>,
    /// `# TYPE` declarations: family name → type (`counter`, `gauge`, `histogram`, …).
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses `text`, refusing any line that is not a comment, a `# HELP`/`# TYPE` line or
    /// a sample (`name{label="value",…} value`); the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut exposition = Self::default();
        for (number, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next())
                    else {
                        return Err(bad("a TYPE line is `# TYPE name type`"));
                    };
                    check_name(name).map_err(|why| bad(&why))?;
                    exposition.types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            exposition
                .samples
                .push(parse_sample(line).map_err(|why| bad(&why))?);
        }
        Ok(exposition)
    }

    /// `GET http://{addr}/metrics` with `http`, checked (`200`, the 0.0.4 text format) and
    /// parsed; panics, naming `addr`, otherwise.
    pub async fn scrape(http: &reqwest::Client, addr: &str) -> Self {
        let response = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("scraping {addr}: {e}"));
        assert_eq!(response.status(), 200, "GET http://{addr}/metrics");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{addr}: {content_type}"
        );
        let text = response.text().await.expect("a metrics body");
        Self::parse(&text).unwrap_or_else(|e| panic!("{addr}'s exposition: {e}\n{text}"))
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples [`matching`](Self::matching) `name` and `labels` (0 when
    /// there are none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// Whether `name` is exported: a sample's name, a declared family, or a histogram's or
    /// summary's `_bucket`, `_sum` or `_count` series.
    pub fn exports(&self, name: &str) -> bool {
        if self.has(name) || self.types.contains_key(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|family| {
                matches!(
                    self.types.get(family).map(String::as_str),
                    Some("histogram" | "summary")
                )
            })
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label needs `=`")?;
            let key = rest[..eq].trim();
            check_name(key)?;
            let mut chars = rest[eq + 1..].char_indices();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("a label value is quoted".into());
            }
            let mut value = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        _ => return Err("a bad escape in a label value".into()),
                    },
                    '"' => {
                        end = Some(eq + 1 + i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or("an unterminated label value")?;
            labels.insert(key.to_owned(), value);
            rest = &rest[end..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("a sample needs a value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{v:?} is not a number"))?,
    };
    // An optional timestamp, then nothing.
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("{timestamp:?} is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("text after the value".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_types_are_read_and_garbage_is_refused() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{k=\"v\",q=\"x\\\"y\"} 3\na_total{k=\"w\"} 4 1700000000\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\ng -1.5e3\n";
        let parsed = Exposition::parse(text).unwrap();
        assert_eq!(parsed.sum("a_total", &[]), 7.0);
        assert_eq!(parsed.sum("a_total", &[("k", "v")]), 3.0);
        assert_eq!(
            parsed.matching("a_total", &[("q", "x\"y")]).count(),
            1,
            "escaped quotes"
        );
        assert_eq!(parsed.sum("g", &[]), -1500.0);
        assert!(parsed.exports("h_bucket") && parsed.exports("h_count") && parsed.exports("h"));
        assert!(!parsed.exports("g_count") && !parsed.exports("missing"));
        for bad in [
            "a_total",
            "a_total{k=\"v\" 1",
            "a_total{k=v} 1",
            "1a 2",
            "a x",
            "a 1 2 3",
            "# TYPE a",
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad}");
        }
    }
}
