package client

// NotifyAt asks the backend to send the experiment's state changes to urls
// (its "notify"): CloudEvents signed with the deployment's notifySecret,
// which the receiver checks with package webhooksig. The backend refuses
// (400) a URL whose host its webhooks file does not allow. A retry of the
// same experiment keeps the first submission's URLs.
func NotifyAt(urls ...string) SubmitOption {
	return func(r *submitRequest) { r.Notify = append(r.Notify, urls...) }
}
