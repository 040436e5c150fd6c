//! Page/per_page query parameters, bounded so no request reads a whole table.

use super::error::{ApiError, ApiResult};

pub const DEFAULT_PER_PAGE: u32 = 25;
pub const MAX_PER_PAGE: u32 = 100;

#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub page: u32,
    pub per_page: u32,
}

impl Paging {
    pub fn new(page: Option<u32>, per_page: Option<u32>) -> ApiResult<Self> {
        let page = page.unwrap_or(1);
        let per_page = per_page.unwrap_or(DEFAULT_PER_PAGE);
        if page == 0 || page > 1_000_000 {
            return Err(ApiError::invalid_field("page", "pages count from 1"));
        }
        if per_page == 0 || per_page > MAX_PER_PAGE {
            return Err(ApiError::invalid_field(
                "per_page",
                format!("must be between 1 and {MAX_PER_PAGE}"),
            ));
        }
        Ok(Paging { page, per_page })
    }

    pub fn limit(self) -> i64 {
        i64::from(self.per_page)
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }
}
