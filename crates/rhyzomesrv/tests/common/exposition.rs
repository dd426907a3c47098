//! Parsing a Prometheus text exposition back into samples for assertions, with a
//! grammar-based parser (`openmetrics-parser`), shared by `tests/metrics.rs` and the e2e
//! tests (included with `#[path]`).
#![allow(dead_code)]

use std::collections::HashMap;

/// One parsed sample: its family's name, its labels, and its value (a histogram's is its
/// count of observations).
#[derive(Debug)]
pub struct Sample {
    pub metric: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
    pub histogram: bool,
}

pub fn parse(text: &str) -> Vec<Sample> {
    use openmetrics_parser::{MetricNumber, PrometheusValue};
    let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("not the Prometheus text format: {e:?}\n{text}"));
    let mut out = Vec::new();
    for (name, family) in &exposition.families {
        for sample in family.iter_samples() {
            let labels = sample_labels(family, sample)
                .unwrap_or_else(|| panic!("{name}: labels do not match the family's"));
            let (value, histogram) = match &sample.value {
                PrometheusValue::Unknown(n) | PrometheusValue::Gauge(n) => (n.as_f64(), false),
                PrometheusValue::Counter(c) => (c.value.as_f64(), false),
                PrometheusValue::Histogram(h) => (
                    h.count.map(|c| c as f64).unwrap_or_else(|| {
                        h.buckets
                            .last()
                            .map_or(0.0, |b| MetricNumber::as_f64(&b.count))
                    }),
                    true,
                ),
                PrometheusValue::Summary(_) => panic!("{name}: no summaries are exported"),
            };
            out.push(Sample {
                metric: name.clone(),
                labels,
                value,
                histogram,
            });
        }
    }
    out
}

fn sample_labels<T, V>(
    family: &openmetrics_parser::MetricFamily<T, V>,
    sample: &openmetrics_parser::Sample<V>,
) -> Option<HashMap<String, String>>
where
    T: Clone,
    V: openmetrics_parser::RenderableMetricValue + Clone,
{
    let names = family.get_label_names();
    let set = sample.get_labelset().ok()?;
    let values: Vec<String> = set.iter_values().cloned().collect();
    Some(names.iter().cloned().zip(values).collect())
}

/// The samples of `metric` whose labels include all of `labels`.
pub fn samples<'a>(s: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    s.iter()
        .filter(|x| {
            x.metric == metric
                && labels
                    .iter()
                    .all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The one value of `metric` with these labels.
pub fn value(s: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(s, metric, labels);
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    found[0].value
}
