//! `todo`: the session's task list. The model sends the whole list to update
//! it and gets it back; without `items` it reads the list.

use serde::{Deserialize, Serialize};

use super::{ToolContext, ToolOutput};

/// Items one list may hold.
const MAX_ITEMS: usize = 100;

/// One task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoItem {
    pub id: String,
    pub content: String,
    pub status: Status,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InProgress,
    Completed,
    Cancelled,
}

#[derive(Deserialize)]
pub struct TodoArgs {
    #[serde(default)]
    items: Option<Vec<TodoItem>>,
}

/// Replaces or reads the list.
pub async fn run(a: TodoArgs, ctx: &ToolContext) -> ToolOutput {
    let mut list = ctx.session.todo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(items) = a.items {
        if items.len() > MAX_ITEMS {
            return ToolOutput::err(format!("at most {MAX_ITEMS} items"));
        }
        *list = items;
    }
    let pending = list
        .iter()
        .filter(|i| matches!(i.status, Status::Pending | Status::InProgress))
        .count();
    let body =
        serde_json::json!({"todos": *list, "summary": {"total": list.len(), "open": pending}});
    ToolOutput::ok(body.to_string())
}
