//! What a page answers when it cannot show what was asked.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use rop_domain::StoreError;

#[derive(Debug)]
pub enum PageError {
    /// 404: no such thing, or one the user may not know exists.
    NotFound,
    /// 403: the user's role does not allow it.
    Forbidden,
    /// 400 with a message for the user.
    BadRequest(String),
    /// 502: an outside system (the PBX) did not give what was needed.
    Unavailable(String),
    /// 500; the cause goes to the log, not to the page.
    Internal(String),
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(error: askama::Error) -> Self {
        Self::Internal(format!("template: {error}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Не найдено",
                "Такой страницы нет или она вам недоступна.".to_owned(),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Нет доступа",
                "Эта страница недоступна для вашей роли. Обратитесь к администратору.".to_owned(),
            ),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, "Ошибка в запросе", message),
            Self::Unavailable(message) => (
                StatusCode::BAD_GATEWAY,
                "Внешняя система не ответила",
                message,
            ),
            Self::Internal(cause) => {
                tracing::error!(%cause, "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Ошибка сервера",
                    "Не удалось показать страницу. Подробности — в журнале сервера.".to_owned(),
                )
            }
        };
        let page = ErrorPage { title, text: &text };
        match askama::Template::render(&page) {
            Ok(body) => (status, Html(body)).into_response(),
            // The page is static text; without it the status still tells.
            Err(_) => (status, title).into_response(),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    text: &'a str,
}
