//! API errors with the real server's HTTP codes and subcodes (server-api.md §1.6).

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}/{subcode}: {msg}")]
pub struct ApiError {
    pub code: u16,
    pub subcode: u32,
    pub msg: String,
}

impl ApiError {
    pub fn new(code: u16, subcode: u32, msg: impl Into<String>) -> Self {
        ApiError {
            code,
            subcode,
            msg: msg.into(),
        }
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        Self::new(400, 12, format!("Validation error ({})", msg.into()))
    }

    pub fn missing_field(field: &str) -> Self {
        Self::new(400, 11, format!("Missing required fields: fields={field}"))
    }

    pub fn invalid_task(id: &str) -> Self {
        Self::new(400, 101, format!("Invalid task id: id={id}"))
    }

    pub fn invalid_status(current: &str, new: &str) -> Self {
        Self::new(
            400,
            110,
            format!(
                "Invalid task status (Invalid status change): current_status={current}, new_status={new}"
            ),
        )
    }

    pub fn task_status(msg: impl Into<String>) -> Self {
        Self::new(400, 110, format!("Invalid task status ({})", msg.into()))
    }

    pub fn invalid_project(id: &str) -> Self {
        Self::new(400, 401, format!("Invalid project id: id={id}"))
    }

    pub fn invalid_queue(id: &str) -> Self {
        Self::new(400, 701, format!("Invalid queue id: id={id}"))
    }

    pub fn invalid_model(id: &str) -> Self {
        Self::new(400, 201, format!("Invalid model id: id={id}"))
    }

    pub fn not_unique(what: &str) -> Self {
        Self::new(
            400,
            801,
            format!("Value combination already exists (unique field): {what}"),
        )
    }

    pub fn unauthorized(subcode: u32, msg: impl Into<String>) -> Self {
        Self::new(401, subcode, msg)
    }

    pub fn not_found_endpoint(name: &str, version: &str) -> Self {
        Self::new(
            404,
            0,
            format!("Unable to find endpoint for name {name} and version {version}"),
        )
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, 0, format!("General data error ({})", msg.into()))
    }

    pub fn db(e: rusqlite::Error) -> Self {
        Self::internal(format!("storage: {e}"))
    }
}
