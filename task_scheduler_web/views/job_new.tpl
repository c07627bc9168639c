% rebase('base.tpl')
<p class="crumbs"><a href="/jobs">Jobs</a> /</p>
<h1>New job</h1>
% include('_job_form.tpl', action='/jobs/new', editing=False, cancel='/jobs')
