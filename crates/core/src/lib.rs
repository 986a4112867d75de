//! Domain types shared by every Cascade crate: the JSON contract, dense ids, time and validation.

pub mod error;
pub mod ids;
pub mod time;
pub mod types;

pub use error::{CoreError, FieldError};
pub use ids::{IdMap, Idx, NONE_IDX};
pub use time::{Millis, TimeInput};
pub use types::{
    EditorialList, Event, EventIn, EventKind, Item, ItemPatch, Mutation, Target, User,
};
