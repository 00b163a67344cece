//! The library's error type: one enum whose variants name the op, the shapes and the
//! hyperparameter at fault.

/// Every fallible function of the library returns this error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input has a shape the op cannot take.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// A hyperparameter is out of its domain (a zero stride, channels not divisible by groups, ...).
    #[error("{op}: invalid `{param}`: {msg}")]
    Param {
        op: &'static str,
        param: &'static str,
        msg: String,
    },
    /// Misuse of automatic differentiation (backward from a non-scalar, a graph used twice, ...).
    #[error("autograd: {0}")]
    Autograd(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A model/training spec is malformed: names the file, where in it, and what was expected.
    #[error("{path}: {at}: {msg}")]
    Spec {
        path: String,
        at: String,
        msg: String,
    },
    /// A file was read but its content is not what was expected.
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
    /// A model the compiled plan cannot run (it then runs eagerly): names the layer and why.
    #[error("{layer}: not compiled: {why}")]
    NotCompiled { layer: String, why: String },
    /// An action that could lose or change the user's work is refused (clearing a folder
    /// convnet did not write, resuming with another seed, a second writer on one run).
    #[error("{path}: {msg}")]
    Refused { path: String, msg: String },
    /// Data-parallel training: another rank failed, or the ranks disagree.
    #[error("data-parallel training: {0}")]
    Dist(String),

    /// A layer or node another format cannot express (ONNX export or import).
    #[error("{at}: cannot be converted: {why}")]
    Convert { at: String, why: String },
    /// A size beyond the memory budget (see [`crate::limits`]), refused before allocating.
    #[error("{what} {msg}")]
    TooLarge { what: String, msg: String },
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        msg: msg.into(),
    })
}

pub(crate) fn param_err<T>(
    op: &'static str,
    param: &'static str,
    msg: impl Into<String>,
) -> Result<T> {
    Err(Error::Param {
        op,
        param,
        msg: msg.into(),
    })
}
