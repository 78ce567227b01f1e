//! `etcdserverpb.Auth`: authentication is not implemented. AuthStatus answers "disabled" (clients
//! ask it before anything else); every other call is refused with a clear message.

use tonic::{Request, Response};
use yizhi_proto::etcdserverpb as pb;

use super::{Answer, Api};

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

// AuthStatus answers, the listed methods refuse.
super::impl_refusing! {
    AuthService: pb::auth_server::Auth {
        async fn auth_status(&self, _: Request<pb::AuthStatusRequest>) -> Answer<pb::AuthStatusResponse> {
            Ok(Response::new(pb::AuthStatusResponse {
                header: Some(self.api.header(self.api.current_revision())),
                enabled: false,
                auth_revision: 0,
            }))
        }
    }
    refused with AUTH_UNSUPPORTED => {
        auth_enable: pb::AuthEnableRequest => pb::AuthEnableResponse;
        auth_disable: pb::AuthDisableRequest => pb::AuthDisableResponse;
        authenticate: pb::AuthenticateRequest => pb::AuthenticateResponse;
        user_add: pb::AuthUserAddRequest => pb::AuthUserAddResponse;
        user_get: pb::AuthUserGetRequest => pb::AuthUserGetResponse;
        user_list: pb::AuthUserListRequest => pb::AuthUserListResponse;
        user_delete: pb::AuthUserDeleteRequest => pb::AuthUserDeleteResponse;
        user_change_password: pb::AuthUserChangePasswordRequest => pb::AuthUserChangePasswordResponse;
        user_grant_role: pb::AuthUserGrantRoleRequest => pb::AuthUserGrantRoleResponse;
        user_revoke_role: pb::AuthUserRevokeRoleRequest => pb::AuthUserRevokeRoleResponse;
        role_add: pb::AuthRoleAddRequest => pb::AuthRoleAddResponse;
        role_get: pb::AuthRoleGetRequest => pb::AuthRoleGetResponse;
        role_list: pb::AuthRoleListRequest => pb::AuthRoleListResponse;
        role_delete: pb::AuthRoleDeleteRequest => pb::AuthRoleDeleteResponse;
        role_grant_permission: pb::AuthRoleGrantPermissionRequest => pb::AuthRoleGrantPermissionResponse;
        role_revoke_permission: pb::AuthRoleRevokePermissionRequest => pb::AuthRoleRevokePermissionResponse;
    }
}
