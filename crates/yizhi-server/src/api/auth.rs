//! `etcdserverpb.Auth`: authentication is not implemented. AuthStatus answers "disabled" (clients
//! ask it before anything else); every other call is refused with a clear message.

use tonic::{Request, Response, Status};
use yizhi_proto::etcdserverpb as pb;

use super::Api;

const AUTH_UNSUPPORTED: &str = "etcdserver: authentication is not supported yet";

#[derive(Debug)]
pub struct AuthService {
    api: Api,
}

impl AuthService {
    pub fn new(api: Api) -> Self {
        AuthService { api }
    }
}

/// The service: AuthStatus answers, the listed methods refuse. The impl is generated whole so
/// that `async_trait` sees the expanded methods.
macro_rules! auth_service {
    ($($method:ident: $request:ident -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl pb::auth_server::Auth for AuthService {
            async fn auth_status(
                &self,
                _: Request<pb::AuthStatusRequest>,
            ) -> Result<Response<pb::AuthStatusResponse>, Status> {
                Ok(Response::new(pb::AuthStatusResponse {
                    header: Some(self.api.header(self.api.current_revision())),
                    enabled: false,
                    auth_revision: 0,
                }))
            }

            $(
                async fn $method(
                    &self,
                    _: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    Err(Status::unimplemented(AUTH_UNSUPPORTED))
                }
            )*
        }
    };
}

auth_service! {
    auth_enable: AuthEnableRequest -> AuthEnableResponse;
    auth_disable: AuthDisableRequest -> AuthDisableResponse;
    authenticate: AuthenticateRequest -> AuthenticateResponse;
    user_add: AuthUserAddRequest -> AuthUserAddResponse;
    user_get: AuthUserGetRequest -> AuthUserGetResponse;
    user_list: AuthUserListRequest -> AuthUserListResponse;
    user_delete: AuthUserDeleteRequest -> AuthUserDeleteResponse;
    user_change_password: AuthUserChangePasswordRequest -> AuthUserChangePasswordResponse;
    user_grant_role: AuthUserGrantRoleRequest -> AuthUserGrantRoleResponse;
    user_revoke_role: AuthUserRevokeRoleRequest -> AuthUserRevokeRoleResponse;
    role_add: AuthRoleAddRequest -> AuthRoleAddResponse;
    role_get: AuthRoleGetRequest -> AuthRoleGetResponse;
    role_list: AuthRoleListRequest -> AuthRoleListResponse;
    role_delete: AuthRoleDeleteRequest -> AuthRoleDeleteResponse;
    role_grant_permission: AuthRoleGrantPermissionRequest -> AuthRoleGrantPermissionResponse;
    role_revoke_permission: AuthRoleRevokePermissionRequest -> AuthRoleRevokePermissionResponse;
}
