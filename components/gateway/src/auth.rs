//! Bearer-token authentication (JWT HS256, secret from the `auth_secret` variable).

use service_kit::http::{Request, Response};
use service_kit::ids::now_ms;
use service_kit::{Env, settings};
use shop_domain::auth::{AuthError, Claims, verify_token};

/// The authenticated caller, or the 401 answer.
pub fn authenticate(request: &Request, env: &Env) -> Result<Claims, Response> {
    let Some(header) = request.header("authorization") else {
        return Err(unauthorized("missing bearer token"));
    };
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        return Err(unauthorized(
            "the Authorization header must be 'Bearer <token>'",
        ));
    };
    settings::warn_on_dev_secrets(env.config, env.kv, "gateway");
    let secret = settings::auth_secret(env.config);
    verify_token(token.trim(), &secret, now_ms() / 1000).map_err(|e| {
        unauthorized(match e {
            AuthError::Expired => "token expired",
            AuthError::BadSignature => "bad token signature",
            AuthError::UnsupportedAlgorithm => "unsupported token algorithm",
            AuthError::Malformed | AuthError::InvalidClaims => "malformed token",
        })
    })
}

fn unauthorized(detail: &str) -> Response {
    Response::problem(401, "unauthorized", "Unauthorized", detail)
        .with_header("www-authenticate", "Bearer")
}

/// 403 for a caller whose role does not allow the operation.
pub fn forbidden(detail: &str) -> Response {
    Response::problem(403, "forbidden", "Forbidden", detail)
}

/// Staff (or admin) only.
pub fn require_staff(claims: &Claims) -> Result<(), Response> {
    if claims.role.allows_staff() {
        Ok(())
    } else {
        Err(forbidden("staff only"))
    }
}

/// Admin only.
pub fn require_admin(claims: &Claims) -> Result<(), Response> {
    if claims.role == shop_domain::auth::Role::Admin {
        Ok(())
    } else {
        Err(forbidden("admin only"))
    }
}

/// Staff, or the customer `email` themselves.
pub fn require_self_or_staff(claims: &Claims, email: &str) -> Result<(), Response> {
    if claims.role.allows_staff() || claims.sub == email {
        Ok(())
    } else {
        Err(forbidden("customers may only act for themselves"))
    }
}
