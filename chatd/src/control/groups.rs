//! `group_*`: create, change, delete and show groups kept in this node's database.

use std::sync::Arc;

use peerchat_proto::control::{code, Request, Response};
use peerchat_proto::ErrorBody;

use super::reply::{store_error, ReplyFuture};
use crate::node::Node;
use crate::store::GroupError;

pub fn handle(node: &Arc<Node>, request: Request) -> ReplyFuture {
    let node = node.clone();
    Box::pin(async move {
        let store = &node.store;
        let r = match request {
            Request::GroupCreate { group, members } => store
                .group_create(group, members)
                .await
                .map(Response::Group),
            Request::GroupAdd { group, members } => {
                store.group_add(group, members).await.map(Response::Group)
            }
            Request::GroupRemove { group, members } => store
                .group_remove(group, members)
                .await
                .map(Response::Group),
            Request::GroupDelete { group } => {
                store.group_delete(group).await.map(|()| Response::Done)
            }
            Request::GroupShow { group } => store.group_show(group).await.map(Response::Group),
            Request::GroupList => store
                .group_list()
                .await
                .map(|groups| Response::Groups { groups }),
            _ => return Err(ErrorBody::new(code::INTERNAL, "not a group request")),
        };
        r.map_err(group_error)
    })
}

pub fn group_error(e: GroupError) -> ErrorBody {
    match e {
        GroupError::Exists(_) => ErrorBody::new(code::CONFLICT, e.to_string()),
        GroupError::NotFound(_) => ErrorBody::new(code::NOT_FOUND, e.to_string()),
        GroupError::TooLarge { .. } => ErrorBody::new(code::TOO_LARGE, e.to_string()),
        GroupError::Store(e) => store_error(e),
    }
}
