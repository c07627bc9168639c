% rebase('base.tpl')
<p class="crumbs"><a href="/jobs">{{t('nav.jobs')}}</a> /</p>
<h1>{{t('title.new')}}</h1>
% include('_job_form.tpl', action='/jobs/new', editing=False, cancel='/jobs')
