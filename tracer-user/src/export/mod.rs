pub mod folded;
pub mod json;
