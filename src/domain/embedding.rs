use zeroize::Zeroizing;

use super::InvalidInput;

/// An embedding model the deployment accepts. Thresholds belong to the model
/// because a cosine threshold only means something for one model's score
/// distribution: each deployment sets it for its false-match target.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingModel {
    pub id: ModelId,
    pub dimension: usize,
    pub threshold: f32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelId(String);

impl ModelId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ModelId {
    type Error = InvalidInput;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let ok = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidInput::UnknownModel)
        }
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A face embedding that passed every check a comparison relies on: the model's
/// dimension, finite values, a non-zero norm. Zeroized on drop; `Debug` prints
/// nothing of the values.
pub struct Embedding {
    values: Zeroizing<Vec<f32>>,
}

impl Embedding {
    pub const MAX_DIMENSION: usize = 4096;

    pub fn new(model: &EmbeddingModel, values: Zeroizing<Vec<f32>>) -> Result<Self, InvalidInput> {
        if values.len() != model.dimension {
            return Err(InvalidInput::Dimension);
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(InvalidInput::NotFinite);
        }
        if values.iter().all(|v| *v == 0.0) {
            return Err(InvalidInput::ZeroVector);
        }
        Ok(Self { values })
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Embedding(<{} values redacted>)", self.values.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> EmbeddingModel {
        EmbeddingModel {
            id: ModelId::try_from("m-4").unwrap(),
            dimension: 4,
            threshold: 0.5,
        }
    }

    #[test]
    fn accepts_a_valid_vector() {
        let e = Embedding::new(&model(), Zeroizing::new(vec![0.1, 0.2, 0.3, 0.4])).unwrap();
        assert_eq!(e.values().len(), 4);
        assert!(!format!("{e:?}").contains("0.1"));
    }

    #[test]
    fn refuses_bad_vectors() {
        let cases = [
            (vec![0.1, 0.2, 0.3], InvalidInput::Dimension),
            (vec![0.1, f32::NAN, 0.3, 0.4], InvalidInput::NotFinite),
            (vec![0.1, f32::INFINITY, 0.3, 0.4], InvalidInput::NotFinite),
            (vec![0.0; 4], InvalidInput::ZeroVector),
        ];
        for (values, expected) in cases {
            assert_eq!(
                Embedding::new(&model(), Zeroizing::new(values)).unwrap_err(),
                expected
            );
        }
    }
}
