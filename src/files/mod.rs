//! The disk side: from a URL to an open file under the root, the in-memory cache of small
//! files, and directory listings.

pub mod cache;
pub mod listing;
pub mod static_files;
