//! Declared features: name, default, and index, shared by training and serving.

/// One declared feature.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDef {
    pub name: String,
    /// Used when the value cannot be computed (and counted as missing).
    pub default: f32,
}

/// An ordered set of features; a candidate's features are a row of `len()` floats.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSchema {
    defs: Vec<FeatureDef>,
}

impl FeatureDef {
    pub fn new(name: impl Into<String>, default: f32) -> Self {
        Self {
            name: name.into(),
            default,
        }
    }
}

impl FeatureSchema {
    pub fn new(defs: Vec<FeatureDef>) -> Self {
        Self { defs }
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.name == name)
    }

    /// The feature names, in column order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.iter().map(|d| d.name.as_str())
    }

    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    /// A row filled with every feature's default.
    pub fn defaults(&self) -> impl Iterator<Item = f32> + '_ {
        self.defs.iter().map(|d| d.default)
    }
}
