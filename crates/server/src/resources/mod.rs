//! One module per resource of the API: its request and response types, its handlers and its
//! routes. The router puts each resource's routes in their access group.

pub mod dashboard;
pub mod drift;
pub mod editorial;
pub mod events;
pub mod experiments;
pub mod faults;
pub mod gorse;
pub mod health;
pub mod item_sources;
pub mod items;
pub mod metrics_history;
pub mod models;
pub mod recommendations;
pub mod similar;
pub mod suggest;
pub mod users;
