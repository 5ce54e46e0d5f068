//! End-to-end tests of the HTTP API over real HTTP, each on SQLite and on
//! PostgreSQL.

mod helpers;

mod amocrm;
mod analysis;
mod auth;
mod bitrix24;
mod blob_s3;
mod calls;
mod fileserver;
mod guard;
mod integration_store;
mod malformed;
mod ops;
mod pipeline;
mod settings;
mod speech;
mod upload;
mod web_pages;
mod web_store;
mod zadarma;
