module mlmodel-lifecycle/hack/go/pause

go 1.22
