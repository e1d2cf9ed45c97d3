//! The sample model, independent of any exposition library.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Quantile samples (a `quantile` label, no suffix), as zone sketches
    /// give; from a textfile also `_sum` and `_count` samples, each
    /// naming its suffix, after the quantiles of their label set.
    Summary,
    Untyped,
    /// Cumulative `_bucket` samples (an `le` label), `_sum` and `_count`;
    /// each sample names its suffix.
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Appended to the family name for this sample (`_bucket`, `_sum`,
    /// `_count` in a histogram); empty otherwise.
    pub suffix: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    pub fn new(name: &str, help: &str, kind: Kind) -> Self {
        MetricFamily {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: Vec::new(),
        }
    }

    pub fn gauge(name: &str, help: &str, value: f64) -> Self {
        let mut f = Self::new(name, help, Kind::Gauge);
        f.push(&[], value);
        f
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.push_suffixed("", labels, value);
    }

    /// A sample named `<family><suffix>`, as histograms need.
    pub fn push_suffixed(&mut self, suffix: &'static str, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample {
            suffix,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }

    /// The value of the sample without labels, if there is one.
    pub fn unlabeled(&self) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.labels.is_empty())
            .map(|s| s.value)
    }
}
